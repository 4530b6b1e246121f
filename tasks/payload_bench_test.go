package tasks

import "testing"

// BenchmarkDecodeStrict is the strict decode every task's handler runs on
// its payload before its work (here data:process's).
func BenchmarkDecodeStrict(b *testing.B) {
	data := []byte(`{"key":"report:1","work":1000,"ttl_seconds":60}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeStrict[ProcessData](TypeProcessData, data); err != nil {
			b.Fatal(err)
		}
	}
}
