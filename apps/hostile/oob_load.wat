;; Reads one word past the end of its one-page memory: the load traps
;; (Wasm spec 4.4.7, memory instructions) and only this domain ends.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "loading past the end of memory")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 30))
    (drop (i32.load (i32.const 65534)))))
