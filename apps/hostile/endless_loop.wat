;; Spins forever without a single host call: the fuel slice must preempt it
;; so that every other domain keeps running. It counts its iterations in
;; memory so that its pages stay in use.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "spinning forever without host calls")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 35))
    (loop $forever
      (i64.store (i32.const 64) (i64.add (i64.load (i32.const 64)) (i64.const 1)))
      (br $forever))))
