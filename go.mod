module greta

go 1.26.0

require (
	github.com/spf13/pflag v1.1.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/ebitengine/purego v0.11.3 // indirect
	golang.org/x/term v0.47.0 // indirect
)

require (
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3
	golang.org/x/text v0.14.0 // indirect
)
