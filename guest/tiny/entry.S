/*
 * Entry points of the tiny test guest.
 *  - _start64 at load + 0x200: the 64-bit boot protocol (bzImage and plain
 *    ELF), boot_params in %rsi.
 *  - _start32: the PVH entry (32-bit protected mode, paging off,
 *    hvm_start_info in %ebx), named by a Xen ELF note when PVH_NOTE is set.
 */
    .section .text.head, "ax"
    .code32
head32:
    cli
1:  hlt
    jmp 1b

    .org 0x200
    .code64
    .globl _start64
_start64:
    cli
    lea stack_top(%rip), %rsp
    xor %edi, %edi             /* mode 0: boot_params */
    call cmain
2:  cli
    hlt
    jmp 2b

    .text
    .code32
    .globl _start32
_start32:
    cli
    mov %ebx, %esi
    /* Identity map the first GiB and the IOAPIC/LAPIC 2 MiB pages. */
    mov $pd0, %edi
    xor %ecx, %ecx
3:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    inc %ecx
    cmp $512, %ecx
    jb 3b
    movl $(0xfec00000 | 0x83), pd3 + 502*8
    movl $(0xfee00000 | 0x83), pd3 + 503*8
    movl $(pd0 + 3), pdpt
    movl $(pd3 + 3), pdpt + 3*8
    movl $(pdpt + 3), pml4
    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax             /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx      /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax       /* PG | PE */
    mov %eax, %cr0
    lgdt gdt_desc
    ljmp $8, $pvh64
    .code64
pvh64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    lea stack_top(%rip), %rsp
    mov %esi, %esi
    mov $1, %edi               /* mode 1: hvm_start_info */
    call cmain
4:  cli
    hlt
    jmp 4b

/* Real-mode AP trampoline, copied to 0x10000 (SIPI vector 0x10). */
    .globl ap_tramp, ap_tramp_end, ap_count_off
    .code16
ap_tramp:
    lock incl %cs:(ap_count - ap_tramp)
5:  cli
    hlt
    jmp 5b
    .p2align 2
ap_count:
    .long 0
ap_tramp_end:
    .code64

    .section .rodata
    .p2align 3
ap_count_off:
    .quad ap_count - ap_tramp
gdt:
    .quad 0
    .quad 0x00af9a000000ffff   /* 64-bit code */
    .quad 0x00cf92000000ffff   /* data */
gdt_desc:
    .word gdt_desc - gdt - 1
    .long gdt

#ifdef PVH_NOTE
    .section .note.pvh, "a"
    .p2align 2
    .long 4                    /* namesz */
    .long 4                    /* descsz */
    .long 18                   /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start32
#endif

    .bss
    .p2align 12
pml4: .skip 4096
pdpt: .skip 4096
pd0:  .skip 4096
    .globl pd3
pd3:  .skip 4096
    .skip 16384
stack_top:
