package engine

import "github.com/tether-iot/tether"

// SetProcessHook makes e call f before it evaluates an input of a rule, so
// that tests can make a rule panic.
func SetProcessHook(e *Engine, f func(r *tether.Rule, in *Input)) { e.hook = f }

// TopicMatches exposes topicMatches.
var TopicMatches = topicMatches

// Env exposes the environment an input gives expressions.
func Env(in Input) map[string]any { return env(&in, deviceEnv(in.Device)) }
