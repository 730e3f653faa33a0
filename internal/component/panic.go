package component

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// Panics stop at the component boundary. A panic in a component's Init,
// Start, Ready or Stop (called by the Manager), in a function run by a
// Runner, or in a function a component runs in a goroutine of its own
// through Safely, becomes that component's error: the manager logs it with
// its stack and stops every component cleanly, and skiff exits with an error
// instead of a crash.
//
// What no guard can cover: a goroutine that upstream code starts itself (the
// kubelet's, an informer's, flannel's event loops). Go delivers a panic only
// to the goroutine that raised it, and one not recovered there ends the
// process. Such goroutines of Kubernetes run under its own HandleCrash,
// which logs the panic and, by upstream's default, crashes on purpose.

// PanicError is a panic caught at the component boundary.
type PanicError struct {
	// Value is what was passed to panic.
	Value any
	// Stack is the panicking goroutine's stack, as debug.Stack prints it.
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Recover turns a panic of the calling function into a *PanicError in *err.
// Use it directly in a defer: `defer component.Recover(&err)`.
func Recover(err *error) {
	if r := recover(); r != nil {
		*err = &PanicError{Value: r, Stack: debug.Stack()}
	}
}

// Safely runs fn and returns its error, or a *PanicError if it panicked. A
// component wraps every goroutine it starts with upstream code in it, so that
// the panic reaches the component's error path (a Runner's failure, say)
// rather than ending the process.
func Safely(fn func() error) (err error) {
	defer Recover(&err)
	return fn()
}

// asPanic returns the panic inside err, if any.
func asPanic(err error) (*PanicError, bool) {
	var pe *PanicError
	ok := errors.As(err, &pe)
	return pe, ok
}
