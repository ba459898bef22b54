package main

import (
	"greta/backend/cpu"
	"greta/backend/cuda"
	"greta/ml"
)

func newCUDABackend() (ml.Backend, error) { return cuda.New() }

func newCPUBackend(threads int) ml.Backend { return cpu.New(threads) }
