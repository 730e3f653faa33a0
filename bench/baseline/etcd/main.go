// Command etcd is upstream etcd for the start-up benchmark's baseline. etcd's
// own main lives in the go.etcd.io/etcd/v3 module, which is not in skiff's
// module graph; go.etcd.io/etcd/server/v3 (the same release kine uses) is,
// and its etcdmain package is the whole of that main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
