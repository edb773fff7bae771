;; WASI fd_write with an iovec whose buffer lies at 0xfffffff0, outside
;; memory: the host call traps this domain before writing anything.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "writing from 0xfffffff0")
  ;; The iovec at 64: {buf: 0xfffffff0, buf_len: 256}.
  (data (i32.const 64) "\f0\ff\ff\ff\00\01\00\00")
  (func (export "_start")
    (call $log (i32.const 3) (i32.const 0) (i32.const 23))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 128)))))
