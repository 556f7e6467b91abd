// Command etcd is the etcd server (go.etcd.io/etcd/server/v3, the same
// release as the client splitter uses) built from the module proxy, for
// the fleet tests, the fleet demo and the fleet benchmark. It lives in its
// own module so that the server's dependencies stay out of splitter's
// go.mod; scripts/etcd.sh builds it into .venv/bin/etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
