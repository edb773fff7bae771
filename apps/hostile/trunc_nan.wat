;; i32.trunc_f32_s of NaN has no integer result and traps
;; (Wasm spec 4.3.3, trunc).
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "truncating NaN to i32")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 21))
    (drop (i32.trunc_f32_s (f32.div (f32.const 0) (f32.const 0))))))
