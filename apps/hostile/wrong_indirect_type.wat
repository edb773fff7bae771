;; call_indirect through a table slot whose function has another type:
;; the signature check at the call traps (Wasm spec 4.4.8, call_indirect).
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (type $takes_i32 (func (param i32) (result i32)))
  (type $takes_nothing (func (result i64)))
  (table 2 funcref)
  (elem (i32.const 0) $double)
  (data (i32.const 0) "calling (i32)->i32 as ()->i64")
  (func $double (type $takes_i32) (i32.mul (local.get 0) (i32.const 2)))
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 29))
    (drop (call_indirect (type $takes_nothing) (i32.const 0)))))
