;; Integer division by zero traps (Wasm spec 4.3.2, idiv_u).
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "dividing by zero")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 16))
    ;; The divisor comes from memory so no optimiser could fold it.
    (drop (i32.div_u (i32.const 7) (i32.load (i32.const 60))))))
