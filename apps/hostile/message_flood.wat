;; Floods the domain named `counter` (which never reads its mailbox) with
;; the largest messages `send` accepts until the receiver refuses, then
;; keeps sending; also sends one byte too many and to a name nobody has.
;; Prints `flood: N accepted, then mailbox full; too large and no such
;; domain refused` and exits 0, or exits 1 naming the unexpected status.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "amber" "exit" (func $exit (param i32)))
  (import "amber" "send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "env" "memory" (memory 3 3))
  (data (i32.const 0) "counter")
  (data (i32.const 16) "nobody")
  (data (i32.const 32) "flood: ")
  (data (i32.const 48) " accepted, then mailbox full; too large and no such domain refused")
  (data (i32.const 128) "flood: unexpected status from send")
  ;; The message itself: 64 KiB from 0x10000 (its contents do not matter).
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
  (func $fail
    (call $log (i32.const 1) (i32.const 128) (i32.const 34))
    (call $exit (i32.const 1)))
  (func (export "_start")
    (local $accepted i32) (local $status i32) (local $tries i32) (local $end i32)
    (memory.fill (i32.const 0x10000) (i32.const 0x55) (i32.const 0x10001))
    ;; Send until the receiver refuses; status 2 is MailboxFull.
    (block $full
      (loop $flood
        (local.set $status
          (call $send (i32.const 0) (i32.const 7) (i32.const 0x10000) (i32.const 0x10000)))
        (br_if $full (i32.ne (local.get $status) (i32.const 0)))
        (local.set $accepted (i32.add (local.get $accepted) (i32.const 1)))
        (br $flood)))
    (if (i32.ne (local.get $status) (i32.const 2)) (then (call $fail)))
    ;; Keep pushing: every further send is refused the same way.
    (loop $more
      (if (i32.ne
            (call $send (i32.const 0) (i32.const 7) (i32.const 0x10000) (i32.const 0x10000))
            (i32.const 2))
        (then (call $fail)))
      (local.set $tries (i32.add (local.get $tries) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $tries) (i32.const 1000))))
    ;; One byte over the limit is TooLarge (4); an unknown name NoSuchDomain (1).
    (if (i32.ne
          (call $send (i32.const 16) (i32.const 6) (i32.const 0x10000) (i32.const 0x10001))
          (i32.const 4))
      (then (call $fail)))
    (if (i32.ne
          (call $send (i32.const 16) (i32.const 6) (i32.const 0x10000) (i32.const 16))
          (i32.const 1))
      (then (call $fail)))
    (local.set $end (i32.const 1024))
    (memory.copy (local.get $end) (i32.const 32) (i32.const 7))
    (local.set $end (call $put_u32 (i32.add (local.get $end) (i32.const 7)) (local.get $accepted)))
    (memory.copy (local.get $end) (i32.const 48) (i32.const 66))
    (local.set $end (i32.add (local.get $end) (i32.const 66)))
    (call $log (i32.const 3) (i32.const 1024) (i32.sub (local.get $end) (i32.const 1024)))))
