;; Output that would pose as something else if it reached the terminal raw:
;; one log line that erases its line, returns to its start, prints a fake
;; counter line, moves up a line and rubs out a character; a line that fakes
;; the console's prompt and a command; one log of 4,096 line
;; breaks; then 1,000 `fd_write`s of a line, far past the 256 lines a
;; second a domain may print. The host prints the first escaped, cuts the
;; second at 64 lines, drops the flood past the budget with one line saying
;; how much, and the domain exits 0.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "\1b[2K\0d[counter] count 999999\1b[1A\08\7f")
  (data (i32.const 64) "spam\0a")
  (data (i32.const 128) "amber> ps")
  ;; The flood's iovec: {buf: 64, buf_len: 5}.
  (data (i32.const 80) "\40\00\00\00\05\00\00\00")
  (func (export "_start") (local $i i32)
    (call $log (i32.const 3) (i32.const 0) (i32.const 33))
    (call $log (i32.const 3) (i32.const 128) (i32.const 9))
    (memory.fill (i32.const 4096) (i32.const 10) (i32.const 4096))
    (call $log (i32.const 3) (i32.const 4096) (i32.const 4096))
    (loop $flood
      (drop (call $fd_write (i32.const 1) (i32.const 80) (i32.const 1) (i32.const 96)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $flood (i32.lt_u (local.get $i) (i32.const 1000))))))
