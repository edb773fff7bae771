;; Float and integer edge cases that must NOT trap, each checked against the
;; value the Wasm spec defines (sections 4.3.2 and 4.3.3): NaN propagation,
;; signed zeros in min/max, infinities, saturating truncation, rounding.
;; Prints `float edges: all 20 checks passed` and exits 0, or names the
;; first failing check and exits 1.
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "amber" "exit" (func $exit (param i32)))
  (import "env" "memory" (memory 1 1))
  (data (i32.const 0) "float edges: all 20 checks passed")
  (data (i32.const 64) "float edges: check 00 failed")
  ;; Operands come from globals so that they are not constants at the
  ;; instruction that uses them.
  (global $zero32 (mut f32) (f32.const 0))
  (global $zero64 (mut f64) (f64.const 0))
  (global $one64 (mut f64) (f64.const 1))
  (global $first_failure (mut i32) (i32.const 0))
  (func $check (param $index i32) (param $is_ok i32)
    (if (i32.and (i32.eqz (local.get $is_ok)) (i32.eqz (global.get $first_failure)))
      (then (global.set $first_failure (local.get $index)))))
  (func $nan32 (result f32) (f32.div (global.get $zero32) (global.get $zero32)))
  (func $nan64 (result f64) (f64.div (global.get $zero64) (global.get $zero64)))
  (func $infinity64 (result f64) (f64.div (global.get $one64) (global.get $zero64)))
  (func $is_arithmetic_nan32 (param $value f32) (result i32)
    ;; Exponent all ones and the quiet bit set (spec 4.3.3, nans).
    (i32.eq
      (i32.and (i32.reinterpret_f32 (local.get $value)) (i32.const 0x7fc00000))
      (i32.const 0x7fc00000)))
  (func $is_arithmetic_nan64 (param $value f64) (result i32)
    (i64.eq
      (i64.and (i64.reinterpret_f64 (local.get $value)) (i64.const 0x7ff8000000000000))
      (i64.const 0x7ff8000000000000)))
  (func (export "_start")
    ;; 1-2: NaN is unequal to itself, in both widths.
    (call $check (i32.const 1) (f32.ne (call $nan32) (call $nan32)))
    (call $check (i32.const 2) (f64.ne (call $nan64) (call $nan64)))
    ;; 3-4: arithmetic on NaN gives an arithmetic (quiet) NaN.
    (call $check (i32.const 3)
      (call $is_arithmetic_nan32 (f32.add (call $nan32) (f32.const 1))))
    (call $check (i32.const 4)
      (call $is_arithmetic_nan64 (f64.mul (call $nan64) (f64.const 2))))
    ;; 5-6: min(-0, +0) is -0 and max(-0, +0) is +0, by bits.
    (call $check (i32.const 5)
      (i64.eq
        (i64.reinterpret_f64 (f64.min (f64.neg (global.get $zero64)) (global.get $zero64)))
        (i64.const 0x8000000000000000)))
    (call $check (i32.const 6)
      (i64.eqz
        (i64.reinterpret_f64 (f64.max (f64.neg (global.get $zero64)) (global.get $zero64)))))
    ;; 7: min with a NaN operand is NaN.
    (call $check (i32.const 7)
      (call $is_arithmetic_nan64 (f64.min (global.get $one64) (call $nan64))))
    ;; 8-9: 1/+0 is +infinity, 1/-0 is -infinity.
    (call $check (i32.const 8)
      (i64.eq (i64.reinterpret_f64 (call $infinity64)) (i64.const 0x7ff0000000000000)))
    (call $check (i32.const 9)
      (i64.eq
        (i64.reinterpret_f64 (f64.div (global.get $one64) (f64.neg (global.get $zero64))))
        (i64.const 0xfff0000000000000)))
    ;; 10: sqrt(-1) is NaN.
    (call $check (i32.const 10)
      (call $is_arithmetic_nan64 (f64.sqrt (f64.neg (global.get $one64)))))
    ;; 11-13: saturating truncation never traps.
    (call $check (i32.const 11) (i32.eqz (i32.trunc_sat_f32_s (call $nan32))))
    (call $check (i32.const 12)
      (i32.eq (i32.trunc_sat_f64_s (call $infinity64)) (i32.const 0x7fffffff)))
    (call $check (i32.const 13)
      (i64.eqz (i64.trunc_sat_f64_u (f64.neg (call $infinity64)))))
    ;; 14: -2^31 truncates exactly (the edge that must not trap).
    (call $check (i32.const 14)
      (i32.eq
        (i32.trunc_f64_s (f64.sub (f64.const -2147483648) (global.get $zero64)))
        (i32.const 0x80000000)))
    ;; 15: rem_s(-2^31, -1) is 0 (div_s of the same traps; rem_s does not).
    (call $check (i32.const 15)
      (i32.eqz (i32.rem_s (i32.const 0x80000000) (i32.trunc_f64_s (f64.neg (global.get $one64))))))
    ;; 16: copysign(1, -0) is -1.
    (call $check (i32.const 16)
      (f64.eq (f64.copysign (global.get $one64) (f64.neg (global.get $zero64))) (f64.const -1)))
    ;; 17-18: nearest rounds half to even, and keeps the sign of -0.5 (-0).
    (call $check (i32.const 17)
      (f64.eq (f64.nearest (f64.add (global.get $one64) (f64.const 1.5))) (f64.const 2)))
    (call $check (i32.const 18)
      (i64.eq
        (i64.reinterpret_f64 (f64.nearest (f64.sub (global.get $zero64) (f64.const 0.5))))
        (i64.const 0x8000000000000000)))
    ;; 19: demoting a huge f64 gives +infinity in f32.
    (call $check (i32.const 19)
      (i32.eq
        (i32.reinterpret_f32 (f32.demote_f64 (f64.mul (global.get $one64) (f64.const 1e300))))
        (i32.const 0x7f800000)))
    ;; 20: u64::MAX converts to 2^64, rounded (bits 0x43f0000000000000).
    (call $check (i32.const 20)
      (i64.eq
        (i64.reinterpret_f64
          (f64.convert_i64_u (i64.trunc_sat_f64_u (call $infinity64))))
        (i64.const 0x43f0000000000000)))
    (if (i32.eqz (global.get $first_failure))
      (then
        (call $log (i32.const 3) (i32.const 0) (i32.const 33))
        (return)))
    ;; "check NN failed": the two digits at offsets 19 and 20 of the message.
    (i32.store8 (i32.const 83)
      (i32.add (i32.const 48) (i32.div_u (global.get $first_failure) (i32.const 10))))
    (i32.store8 (i32.const 84)
      (i32.add (i32.const 48) (i32.rem_u (global.get $first_failure) (i32.const 10))))
    (call $log (i32.const 1) (i32.const 64) (i32.const 28))
    (call $exit (i32.const 1))))
