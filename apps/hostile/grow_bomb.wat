;; Grows its memory one 64 KiB page at a time, touching every new page,
;; until memory.grow refuses (returns -1, Wasm spec 4.4.7); then asks for
;; 2^16 and 2^32-1 pages at once and 1,000 more MiB, all refused, and checks
;; that everything it touched still reads back. Prints
;; `memory.grow refused at N pages; all N pages intact` and exits 0 (or
;; exits 1 naming what went wrong).
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "amber" "exit" (func $exit (param i32)))
  (import "env" "memory" (memory 1))
  (data (i32.const 0) "memory.grow refused at ")
  (data (i32.const 32) " pages; all ")
  (data (i32.const 48) " pages intact")
  (data (i32.const 64) "grow bomb: a refused grow changed the size")
  (data (i32.const 112) "grow bomb: a touched page lost its value")
  ;; Writes the decimal digits of $value at $position; returns the end.
  (func $put_u32 (param $position i32) (param $value i32) (result i32)
    (local $end i32) (local $rest i32)
    (local.set $rest (local.get $value))
    (local.set $end (i32.add (local.get $position) (i32.const 1)))
    (block $counted
      (loop $count
        (local.set $rest (i32.div_u (local.get $rest) (i32.const 10)))
        (br_if $counted (i32.eqz (local.get $rest)))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $count)))
    (local.set $position (local.get $end))
    (loop $digit
      (local.set $position (i32.sub (local.get $position) (i32.const 1)))
      (i32.store8 (local.get $position)
        (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
      (local.set $value (i32.div_u (local.get $value) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $value) (i32.const 0))))
    (local.get $end))
  (func $copy (param $to i32) (param $from i32) (param $length i32) (result i32)
    (memory.copy (local.get $to) (local.get $from) (local.get $length))
    (i32.add (local.get $to) (local.get $length)))
  (func (export "_start")
    (local $pages i32) (local $page i32) (local $tries i32) (local $end i32)
    ;; Grow and touch: page P holds P at its start.
    (block $refused
      (loop $grow
        (local.set $page (memory.grow (i32.const 1)))
        (br_if $refused (i32.eq (local.get $page) (i32.const -1)))
        (i32.store (i32.shl (local.get $page) (i32.const 16)) (local.get $page))
        (br $grow)))
    (local.set $pages (memory.size))
    ;; Enormous requests: 4 GiB of pages, and 2^32-1 pages.
    (if (i32.ne (memory.grow (i32.const 0x10000)) (i32.const -1))
      (then (call $log (i32.const 1) (i32.const 64) (i32.const 42)) (call $exit (i32.const 1))))
    (if (i32.ne (memory.grow (i32.const -1)) (i32.const -1))
      (then (call $log (i32.const 1) (i32.const 64) (i32.const 42)) (call $exit (i32.const 1))))
    (loop $again
      (if (i32.ne (memory.grow (i32.const 16)) (i32.const -1))
        (then (call $log (i32.const 1) (i32.const 64) (i32.const 42)) (call $exit (i32.const 1))))
      (local.set $tries (i32.add (local.get $tries) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $tries) (i32.const 1000))))
    (if (i32.ne (memory.size) (local.get $pages))
      (then (call $log (i32.const 1) (i32.const 64) (i32.const 42)) (call $exit (i32.const 1))))
    ;; Every page from 1 on still holds its number.
    (local.set $page (i32.const 1))
    (loop $verify
      (if (i32.ne (i32.load (i32.shl (local.get $page) (i32.const 16))) (local.get $page))
        (then (call $log (i32.const 1) (i32.const 112) (i32.const 40)) (call $exit (i32.const 1))))
      (local.set $page (i32.add (local.get $page) (i32.const 1)))
      (br_if $verify (i32.lt_u (local.get $page) (local.get $pages))))
    ;; The report goes at 1024.
    (local.set $end (call $copy (i32.const 1024) (i32.const 0) (i32.const 23)))
    (local.set $end (call $put_u32 (local.get $end) (local.get $pages)))
    (local.set $end (call $copy (local.get $end) (i32.const 32) (i32.const 12)))
    (local.set $end (call $put_u32 (local.get $end) (local.get $pages)))
    (local.set $end (call $copy (local.get $end) (i32.const 48) (i32.const 13)))
    (call $log (i32.const 3) (i32.const 1024) (i32.sub (local.get $end) (i32.const 1024)))))
