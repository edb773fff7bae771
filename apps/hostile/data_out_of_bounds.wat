;; A valid module whose data segment ends past its one-page memory:
;; instantiation fails (Wasm spec 4.5.4), so the kernel refuses the disk.
(module
  (import "env" "memory" (memory 1 1))
  (data (i32.const 65530) "0123456789")
  (func (export "_start")))
