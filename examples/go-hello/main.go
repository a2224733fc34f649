// go-hello is the program of cloche's classic multi-stage example: built in a golang image,
// shipped alone in a distroless/static-like image (no shell, no libc, no toolchain).
package main

import (
	"fmt"
	"os"
	"runtime"
)

// greeting is what the program says first; main_test.go checks it.
func greeting(name string) string {
	if name == "" {
		name = "world"
	}
	return fmt.Sprintf("Hello, %s, from a cloche-built image!", name)
}

// whoAmI says whether the process runs as root, as a container user would check it.
func whoAmI(uid int) string {
	if uid == 0 {
		return "running as root (uid 0)"
	}
	return fmt.Sprintf("running as uid %d, not root", uid)
}

func main() {
	fmt.Println(greeting(os.Getenv("GREETING_NAME")))
	fmt.Printf("built with %s for %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Println(whoAmI(os.Getuid()))
}
