package cachemgr

import "errors"

// ErrMiss is returned by Get and its relatives when the key does not exist.
// It replaces go-redis's redis.Nil, so callers never import go-redis to
// detect a miss.
var ErrMiss = errors.New("cachemgr: cache miss")

// ErrClosed is returned by every call made after Close.
var ErrClosed = errors.New("cachemgr: manager closed")

// ErrInvalidArgument wraps every rejected argument: an empty key or pattern,
// a negative TTL, a value of an unsupported type, a bad rate limit.
var ErrInvalidArgument = errors.New("cachemgr: invalid argument")

// ErrDecode is wrapped by every error about a cached value that does not
// decode into the type the caller asked for: GetJSON, GetJSONAsync,
// GetOrComputeJSON, GetSession and TouchSession. The error names the key
// (never a session id) and the type, and also wraps encoding/json's error.
// It usually means that the code writing a key and the code reading it
// disagree about its type.
var ErrDecode = errors.New("cachemgr: decode")
