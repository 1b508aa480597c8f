// Command etcd is etcd v3.6 built from its module, because no registry
// reachable here ships the binary; the tests start it as the Kubernetes API
// server's store.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
