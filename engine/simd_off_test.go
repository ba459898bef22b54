//go:build !(goexperiment.simd && amd64)

package engine_test

// simdBuild: the CPU backend runs its pure-Go twins, several times slower,
// so the invariance tests take shorter prompts there.
const simdBuild = false
