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
