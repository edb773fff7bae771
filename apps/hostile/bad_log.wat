;; amber.log with a length of 2^31-1 bytes from a one-page memory: the host
;; call checks the range and traps this domain (it reads nothing).
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "logging 2^31-1 bytes")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 20))
    (call $log (i32.const 3) (i32.const 16) (i32.const 0x7fffffff))))
