;; Executes `unreachable`, which always traps.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "about to execute unreachable")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 28))
    unreachable))
