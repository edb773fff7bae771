;; amber.log of its whole 16 MiB memory, every byte of it in bounds: the
;; host prints the first 4 KiB and a line saying how much it cut, charges
;; the fuel, and the domain exits 0. (Before that bound, this one call held
;; the serial console, and every domain, for many seconds.)
(module
  (import "amber" "log" (func $log (param i32 i32 i32)))
  (import "env" "memory" (memory 256 256))
  (func (export "_start")
    (memory.fill (i32.const 0) (i32.const 0x78) (i32.const 0x1000000))
    (call $log (i32.const 3) (i32.const 0) (i32.const 0x1000000))))
