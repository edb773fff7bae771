;; call_indirect through an empty table slot: traps on the null element.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (type $nothing (func))
  (table 2 funcref)
  (data (i32.const 0) "calling an empty table slot")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 27))
    (call_indirect (type $nothing) (i32.const 1))))
