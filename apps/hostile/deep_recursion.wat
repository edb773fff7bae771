;; Recurses without end, each frame holding a few locals: the interpreter's
;; call stack limit stops it with a trap long before any host stack fills.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "recursing without end")
  (func $recurse (param $depth i64) (result i64)
    (local $a i64) (local $b i64) (local $c i64) (local $d i64)
    (local.set $a (i64.add (local.get $depth) (i64.const 1)))
    (local.set $b (i64.mul (local.get $a) (i64.const 3)))
    (local.set $c (i64.xor (local.get $b) (local.get $depth)))
    (local.set $d (call $recurse (local.get $a)))
    (i64.add (local.get $d) (i64.add (local.get $c) (local.get $b))))
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 21))
    (drop (call $recurse (i64.const 0)))))
