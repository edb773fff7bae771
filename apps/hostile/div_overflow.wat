;; i32.div_s of -2^31 by -1 overflows and traps (Wasm spec 4.3.2, idiv_s).
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "dividing -2^31 by -1")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 20))
    (drop (i32.div_s (i32.const 0x80000000) (i32.const -1)))))
