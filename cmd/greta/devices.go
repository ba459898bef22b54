package main

import (
	"fmt"

	"greta/backend/cpu"
	"greta/backend/cuda"
	"greta/ml"
)

func newCUDABackend() (ml.Backend, error) { return cuda.New() }

func newCPUBackend(threads int) ml.Backend { return cpu.New(threads) }

// setActivations applies --act to a CPU backend (other backends ignore it).
func setActivations(b ml.Backend, act string) error {
	c, ok := b.(*cpu.Backend)
	if !ok {
		return nil
	}
	for _, a := range []cpu.Activations{cpu.ActAuto, cpu.ActF32, cpu.ActQ8, cpu.ActQ15} {
		if a.String() == act {
			c.Pool().Act = a
			return nil
		}
	}
	return fmt.Errorf("unknown --act %q (expected auto, f32, q8 or q15)", act)
}

// setCacheType applies --cache-type to a CUDA backend; the CPU backend's
// cache is float32 and the oracle's float64 whatever is asked.
func setCacheType(b ml.Backend, t string) error {
	if t == "" {
		return nil // the backend's default (f16, or GRETA_CUDA_KV)
	}
	if t != "f16" && t != "f32" {
		return fmt.Errorf("unknown --cache-type %q (expected f16 or f32)", t)
	}
	if c, ok := b.(*cuda.Backend); ok {
		c.KVF32 = t == "f32"
	}
	return nil
}
