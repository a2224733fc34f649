package main

import (
	"strings"
	"testing"
)

func TestGreeting(t *testing.T) {
	if got := greeting(""); got != "Hello, world, from a cloche-built image!" {
		t.Fatalf("greeting(\"\") = %q", got)
	}
	if got := greeting("cloche"); !strings.HasPrefix(got, "Hello, cloche,") {
		t.Fatalf("greeting(\"cloche\") = %q", got)
	}
}

func TestWhoAmI(t *testing.T) {
	if got := whoAmI(0); got != "running as root (uid 0)" {
		t.Fatalf("whoAmI(0) = %q", got)
	}
	if got := whoAmI(65532); got != "running as uid 65532, not root" {
		t.Fatalf("whoAmI(65532) = %q", got)
	}
}
