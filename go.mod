module greta

go 1.26

require (
	github.com/spf13/pflag v1.1.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/term v0.47.0 // indirect
)
