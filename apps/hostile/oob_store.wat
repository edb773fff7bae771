;; Stores to address 0xfffffffc (-4 read as unsigned), far outside its
;; one-page memory: the store traps and only this domain ends.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "storing to 0xfffffffc")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 21))
    (i32.store (i32.const -4) (i32.const 42))))
