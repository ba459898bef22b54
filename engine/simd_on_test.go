//go:build goexperiment.simd && amd64

package engine_test

// simdBuild: the CPU backend runs its SIMD kernels.
const simdBuild = true
