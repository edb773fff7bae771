;; WASI fd_write with 2^31-1 iovecs starting at 2048 in a one-page memory:
;; the first prints a line, the next 7,935 are empty, and reading the one at
;; 0x10000 traps this domain. Nothing else is written.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 1024) "writing 2^31-1 iovecs...\0a")
  ;; The first iovec: {buf: 1024, buf_len: 25}; all after it read as {0, 0}.
  (data (i32.const 2048) "\00\04\00\00\19\00\00\00")
  (func (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 2048) (i32.const 0x7fffffff) (i32.const 0)))))
