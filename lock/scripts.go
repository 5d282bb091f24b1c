package lock

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts; each .lua file documents its KEYS, ARGV and replies.
var (
	//go:embed acquire.lua
	acquireSrc string
	//go:embed release.lua
	releaseSrc string
	//go:embed extend.lua
	extendSrc string
	//go:embed fence.lua
	fenceSrc string

	acquireScript = redis.NewScript(acquireSrc)
	releaseScript = redis.NewScript(releaseSrc)
	extendScript  = redis.NewScript(extendSrc)
	fenceScript   = redis.NewScript(fenceSrc)
)
