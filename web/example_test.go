package web_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/forgeq/forgeq/cachemgr"
	"github.com/forgeq/forgeq/tasks"
	"github.com/forgeq/forgeq/web"
)

// The cache-aside route computes a value once, then answers from the
// cache.
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	m, _ := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	defer m.Close()

	srv, err := web.New(web.Options{Manager: m})
	if err != nil {
		fmt.Println(err)
		return
	}
	// srv.Run(ctx) serves on Options.Addr; a test server will do here.
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	for range 2 {
		resp, err := http.Get(ts.URL + "/api/cache/greeting?work=1")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Print(resp.StatusCode, " ", string(body))
	}
	// Output:
	// 200 {"key":"greeting","data":"18f6b0200b6fd32ce4e85b6c841f72247964195b8e1cd7c52e046dc51e48f779","source":"computed"}
	// 200 {"key":"greeting","data":"18f6b0200b6fd32ce4e85b6c841f72247964195b8e1cd7c52e046dc51e48f779","source":"cache"}
}

// New refuses to expose the server beyond loopback without credentials.
func ExampleNew() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	m, _ := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	defer m.Close()

	_, err := web.New(web.Options{Addr: "0.0.0.0:8080", Manager: m})
	fmt.Println(errors.Is(err, web.ErrNoCredentials))
	fmt.Println(err)

	_, err = web.New(web.Options{Addr: "0.0.0.0:8080", Manager: m, AuthUsername: "admin", AuthPassword: "s3cret-passphrase"})
	fmt.Println(err)
	// Output:
	// true
	// web: refusing to listen beyond loopback without credentials: HTTP_ADDR "0.0.0.0:8080" is not a loopback address: set HTTP_AUTH_USERNAME and HTTP_AUTH_PASSWORD, or listen on 127.0.0.1
	// <nil>
}

// A program that serves Handler on an http.Server of its own ends the open
// task event streams when the server shuts down, as Run does: without
// CloseStreams, Shutdown would wait for them until its ctx ends.
func ExampleServer_CloseStreams() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	m, _ := cachemgr.NewFromClient(rdb, cachemgr.Options{})
	defer m.Close()
	srv, err := web.New(web.Options{Manager: m})
	if err != nil {
		fmt.Println(err)
		return
	}

	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	hs.RegisterOnShutdown(srv.CloseStreams)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go hs.Serve(ln)

	// A task that no worker runs, and a client following its events.
	task, _ := tasks.NewProcessDataTask(tasks.ProcessData{Key: "report:7", Work: 1}, asynq.TaskID("t1"))
	if _, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(context.Background(), task); err != nil {
		fmt.Println(err)
		return
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/tasks/default/t1/events")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			fmt.Println("event:", name)
			break
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fmt.Println("shutdown:", hs.Shutdown(ctx))
	for sc.Scan() {
	}
	fmt.Println("stream ended:", sc.Err())
	// Output:
	// event: state
	// shutdown: <nil>
	// stream ended: <nil>
}
