;; amber.recv with a buffer of 2^31-1 bytes: checked at the call, so the
;; domain traps at once rather than when a message arrives.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "amber" "recv" (func $recv (param i32 i32 i32 i64) (result i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "receiving into 2^31-1 bytes")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 27))
    (drop (call $recv (i32.const 0) (i32.const 0x7fffffff) (i32.const 64) (i64.const -1)))))
