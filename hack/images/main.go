// Command images builds the project's container images as docker-archive
// tarballs without a container engine, from the Dockerfiles in build/, for
// machines that cannot pull a base image (the real-node test, `make
// images-offline`). It understands the subset of Dockerfile those files use
// in the stages the image needs: ARG, FROM scratch or FROM <earlier stage>,
// COPY (from the build context or --from=<stage>), USER, ENTRYPOINT. A stage
// that needs anything else (FROM golang, RUN) fails clearly: pass
// --build-arg BINARY=prebuilt so the prebuilt stage, which copies bin/ from
// `make build`, is used instead.
//
// Usage:
//
//	images -f build/agent.Dockerfile -context . -build-arg BINARY=prebuilt \
//	  -t vm-dhcp/vm-dhcp-agent:0.1.0 -o agent.tar
//
// The tarball imports with `ctr -n k8s.io images import agent.tar` or
// `docker load -i agent.tar`.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var (
		dockerfile = flag.String("f", "", "Dockerfile to build (required)")
		context    = flag.String("context", ".", "build context: COPY sources are relative to it")
		tag        = flag.String("t", "", "image reference to tag the image with (required)")
		out        = flag.String("o", "", "docker-archive tarball to write (required)")
		buildArgs  stringList
	)
	flag.Var(&buildArgs, "build-arg", "NAME=VALUE overriding an ARG default (repeatable)")
	flag.Parse()
	if *dockerfile == "" || *tag == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	args := map[string]string{}
	for _, a := range buildArgs {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "images: -build-arg %q: want NAME=VALUE\n", a)
			os.Exit(2)
		}
		args[k] = v
	}
	if err := build(*dockerfile, *context, args, *tag, *out); err != nil {
		fmt.Fprintf(os.Stderr, "images: %v\n", err)
		os.Exit(1)
	}
}
