/*
 * The real-mode part of a bzImage: just the setup header (Linux
 * Documentation/arch/x86/boot.rst), one setup sector. zvisor enters the
 * kernel at the 64-bit entry, 0x200 past the protected-mode start.
 */
    .section .setup, "a"
    .org 0x1f1
setup_sects:     .byte 1
root_flags:      .word 0
syssize:         .long 0
ram_size:        .word 0
vid_mode:        .word 0
root_dev:        .word 0
boot_flag:       .word 0xaa55
jump:            .byte 0xeb, 0x6a          /* header ends at 0x202 + 0x6a */
header:          .ascii "HdrS"
version:         .word 0x020f
realmode_swtch:  .long 0
start_sys_seg:   .word 0
kernel_version:  .word 0
type_of_loader:  .byte 0
loadflags:       .byte 0x01                /* LOADED_HIGH */
setup_move_size: .word 0
code32_start:    .long 0x100000
ramdisk_image:   .long 0
ramdisk_size:    .long 0
bootsect_kludge: .long 0
heap_end_ptr:    .word 0
ext_loader_ver:  .byte 0
ext_loader_type: .byte 0
cmd_line_ptr:    .long 0
initrd_addr_max: .long 0x37ffffff
kernel_alignment: .long 0x200000
relocatable:     .byte 0
min_alignment:   .byte 0
xloadflags:      .word 0x0001              /* XLF_KERNEL_64 */
cmdline_size:    .long 2047
hardware_subarch: .long 0
hardware_subarch_data: .quad 0
payload_offset:  .long 0
payload_length:  .long 0
setup_data:      .quad 0
pref_address:    .quad 0x100000
init_size:       .long 0x300000            /* needs RAM up to 4 MiB */
handover_offset: .long 0
kernel_info_offset: .long 0
    .org 1024
