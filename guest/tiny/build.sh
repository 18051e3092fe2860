#!/bin/sh
# Builds the tiny test guests from source with the host's gcc and binutils:
#   OUT/tiny.elf      ELF, 64-bit entry (no PVH note)
#   OUT/tiny-pvh.elf  ELF with a Xen PVH note (32-bit entry)
#   OUT/tiny.bzImage  bzImage (setup header + flat 64-bit image)
set -eu
src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
CC=${CC:-gcc}
flags="-m64 -O2 -std=gnu11 -Wall -Wextra -Werror -ffreestanding -fno-pic -fno-pie -no-pie
 -fno-stack-protector -mno-red-zone -mgeneral-regs-only -fno-asynchronous-unwind-tables
 -fcf-protection=none -nostdlib -static -Wl,--build-id=none -Wl,-T,$src/tiny.ld -Wl,-z,noexecstack -Wl,--no-warn-rwx-segments"
# shellcheck disable=SC2086
$CC $flags -o "$out/tiny.elf" "$src/entry.S" "$src/main.c"
# shellcheck disable=SC2086
$CC $flags -DPVH_NOTE -o "$out/tiny-pvh.elf" "$src/entry.S" "$src/main.c"
objcopy -O binary -j .text "$out/tiny.elf" "$out/tiny.bin"
$CC -c -o "$out/setup.o" "$src/setup.S"
objcopy -O binary -j .setup "$out/setup.o" "$out/setup.bin"
cat "$out/setup.bin" "$out/tiny.bin" > "$out/tiny.bzImage"
rm -f "$out/setup.o" "$out/setup.bin" "$out/tiny.bin"
