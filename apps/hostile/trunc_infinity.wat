;; i64.trunc_f64_u of +infinity is out of range and traps
;; (Wasm spec 4.3.3, trunc).
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "truncating +infinity to i64")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 27))
    (drop (i64.trunc_f64_u (f64.div (f64.const 1) (f64.const 0))))))
