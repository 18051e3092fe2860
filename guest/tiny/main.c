/*
 * The tiny test guest: reports on serial what the VMM handed it (boot
 * protocol, command line, e820 map, initrd, ACPI tables, CPUs), then does
 * what `tiny.action=` on its command line says: poweroff (ACPI S5 through
 * the FADT's sleep control register), reboot (i8042 0xfe), panic
 * (pvpanic), triple (triple fault), echo (serial input), mmio (touch the
 * first virtio-mmio device the DSDT lists), hang.
 * With `tiny.quick` it prints only "TINY ready" and resets at once.
 * Every line starts with "TINY " so tests can pick them out.
 */
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

extern const u8 ap_tramp[], ap_tramp_end[];
extern const u64 ap_count_off;

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static void putc(char c) { outb(0x3f8, (u8)c); }
static void puts(const char *s)
{
	while (*s)
		putc(*s++);
}
static void puthex(u64 v)
{
	char b[19];
	int i = 18;
	b[i] = 0;
	do {
		b[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	b[--i] = 'x';
	b[--i] = '0';
	puts(&b[i]);
}
static void putdec(u64 v)
{
	char b[21];
	int i = 20;
	b[i] = 0;
	do {
		b[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts(&b[i]);
}

#define R8(a) (*(volatile u8 *)(uintptr_t)(a))
#define R16(a) (*(volatile u16 *)(uintptr_t)(a))
#define R32(a) (*(volatile u32 *)(uintptr_t)(a))
#define R64(a) (*(volatile u64 *)(uintptr_t)(a))

static int memeq(u64 a, const char *s, int n)
{
	for (int i = 0; i < n; i++)
		if (R8(a + i) != (u8)s[i])
			return 0;
	return 1;
}

static u8 sum(u64 a, u32 n)
{
	u8 s = 0;
	for (u32 i = 0; i < n; i++)
		s += R8(a + i);
	return s;
}

/* Finds "key" as a whole word of the command line; returns the value start. */
static const char *cmdline_value(const char *c, const char *key)
{
	for (const char *p = c; p && *p; p++) {
		if (p != c && p[-1] != ' ')
			continue;
		const char *k = key, *q = p;
		while (*k && *q == *k) {
			k++;
			q++;
		}
		if (!*k)
			return q;
	}
	return 0;
}

static int word_is(const char *v, const char *w)
{
	while (*w && *v == *w) {
		v++;
		w++;
	}
	return !*w && (*v == 0 || *v == ' ');
}

static void e820_line(u64 addr, u64 size, u32 type, u64 *ram)
{
	puts("TINY e820 ");
	puthex(addr);
	puts(" ");
	puthex(size);
	puts(" ");
	putdec(type);
	puts("\n");
	if (type == 1)
		*ram += size;
}

static void initrd_line(u64 addr, u64 size)
{
	u32 s = 0;
	for (u64 i = 0; i < size; i++)
		s += R8(addr + i);
	puts("TINY initrd addr=");
	puthex(addr);
	puts(" size=");
	putdec(size);
	puts(" sum=");
	puthex(s);
	puts("\n");
}

static u64 sleep_ctl;      /* address of the FADT's sleep control register */
static u8 sleep_ctl_space; /* its GAS address space: 0 memory, 1 I/O */
static int vmm_page_tables; /* 1: the VMM's 4 GiB identity map is live */
extern u64 pd3[512];      /* our own page directory for 3..4 GiB (PVH) */
static u32 madt_lapics;

static u32 virtio_count;
static u64 virtio_base; /* first LNRO0005 device's Memory32Fixed base */

/* virtio-mmio devices in the DSDT: "LNRO0005", then its _CRS's Memory32Fixed. */
static void scan_dsdt(u64 t, u32 len)
{
	for (u64 a = t + 36; a + 8 <= t + len; a++) {
		if (!memeq(a, "LNRO0005", 8))
			continue;
		if (!virtio_count++)
			for (u64 b = a; b + 12 <= t + len && b < a + 96; b++)
				if (R8(b) == 0x86 && R8(b + 1) == 9 && R8(b + 2) == 0) {
					virtio_base = R32(b + 4);
					break;
				}
	}
	puts("TINY virtio-mmio count=");
	putdec(virtio_count);
	puts(" first=");
	puthex(virtio_base);
	puts("\n");
}

static void table_line(u64 t)
{
	u32 len = R32(t + 4);
	char sig[5] = {(char)R8(t), (char)R8(t + 1), (char)R8(t + 2), (char)R8(t + 3), 0};
	puts("TINY acpi ");
	puts(sig);
	puts(" len=");
	putdec(len);
	puts(sum(t, len) == 0 ? " csum=ok\n" : " csum=BAD\n");
	if (memeq(t, "FACP", 4) && len >= 256) {
		sleep_ctl_space = R8(t + 244);
		sleep_ctl = R64(t + 248);
		puts("TINY sleep_ctl space=");
		putdec(sleep_ctl_space);
		puts(" addr=");
		puthex(sleep_ctl);
		puts("\n");
		u64 dsdt = R64(t + 140);
		if (!dsdt)
			dsdt = R32(t + 40);
		if (dsdt)
			table_line(dsdt);
	}
	if (memeq(t, "DSDT", 4))
		scan_dsdt(t, len);
	if (memeq(t, "APIC", 4)) {
		for (u64 o = t + 44; o + 2 <= t + len && R8(o + 1) >= 2; o += R8(o + 1))
			if (R8(o) == 0 && (R32(o + 4) & 1))
				madt_lapics++;
		puts("TINY madt lapics=");
		putdec(madt_lapics);
		puts("\n");
	}
}

static void acpi(u64 rsdp)
{
	u64 scan = 0;
	for (u64 a = 0xe0000; a < 0x100000; a += 16)
		if (memeq(a, "RSD PTR ", 8)) {
			scan = a;
			break;
		}
	puts("TINY rsdp=");
	puthex(rsdp);
	puts(" scan=");
	puthex(scan);
	puts("\n");
	if (!rsdp)
		rsdp = scan;
	if (!rsdp || !memeq(rsdp, "RSD PTR ", 8)) {
		puts("TINY acpi RSDP missing\n");
		return;
	}
	puts(sum(rsdp, 20) == 0 && sum(rsdp, 36) == 0 ? "TINY acpi RSDP csum=ok\n" : "TINY acpi RSDP csum=BAD\n");
	u64 xsdt = R64(rsdp + 24);
	table_line(xsdt);
	u32 len = R32(xsdt + 4);
	for (u64 e = xsdt + 36; e + 8 <= xsdt + len; e += 8)
		table_line(R64(e));
}

static void start_aps(void)
{
	u64 tramp = 0x10000;
	u32 n = (u32)(ap_tramp_end - ap_tramp);
	for (u32 i = 0; i < n; i++)
		R8(tramp + i) = ap_tramp[i];
	volatile u32 *count = (volatile u32 *)(uintptr_t)(tramp + ap_count_off);
	*count = 0;
	u64 icr_lo = 0xfee00300, icr_hi = 0xfee00310;
	R32(icr_hi) = 0;
	R32(icr_lo) = 0x000c4500; /* INIT, all excluding self */
	for (volatile int i = 0; i < 1000; i++)
		;
	for (int k = 0; k < 2; k++) {
		R32(icr_lo) = 0x000c4600 | (u32)(tramp >> 12); /* SIPI */
		for (volatile int i = 0; i < 1000; i++)
			;
	}
	for (u32 i = 0; i < 2000000 && *count < madt_lapics - 1; i++)
		__asm__ volatile("pause");
	puts("TINY smp up=");
	putdec(*count + 1);
	puts("\n");
}

/* Makes MMIO at addr in 3..4 GiB reachable when we run on our own page tables. */
static void map_mmio(u64 addr)
{
	if (vmm_page_tables || addr < 0xc0000000 || addr >= (1ULL << 32))
		return;
	pd3[(addr - 0xc0000000) >> 21] = (addr & ~0x1fffffULL) | 0x83;
	__asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" : : : "rax", "memory");
}

/* ACPI S5 through the FADT's sleep control register (SLP_TYP 5, SLP_EN). */
static void acpi_poweroff(void)
{
	u8 v = (5 << 2) | (1 << 5);
	if (!sleep_ctl)
		return;
	if (sleep_ctl_space == 1) {
		outb((u16)sleep_ctl, v);
	} else if (sleep_ctl_space == 0 && sleep_ctl < (1ULL << 32)) {
		map_mmio(sleep_ctl);
		R8(sleep_ctl) = v;
	}
}

void cmain(int mode, u64 p)
{
	const char *cmdline = 0;
	u64 rsdp = 0, ram = 0;

	vmm_page_tables = mode == 0;
	if (mode == 0)
		cmdline = (const char *)(uintptr_t)(R32(p + 0x228) | ((u64)R32(p + 0xc8) << 32));
	else
		cmdline = (const char *)(uintptr_t)R64(p + 24);
	/* tiny.quick: only the marker, then reset (i8042, else a triple fault),
	 * like the minimal guests other VMMs are benchmarked with. */
	if (cmdline && cmdline_value(cmdline, "tiny.quick")) {
		puts("TINY ready\n");
		outb(0x64, 0xfe);
		struct __attribute__((packed)) {
			u16 limit;
			u64 base;
		} idt0 = {0, 0};
		__asm__ volatile("lidt %0; ud2" : : "m"(idt0));
	}
	if (mode == 0) {
		int bz = R8(p + 0x1f1) != 0;
		puts(bz ? "TINY hello boot=bzimage\n" : "TINY hello boot=elf64\n");
		puts("TINY bootparams ");
		puts(R16(p + 0x1fe) == 0xaa55 && memeq(p + 0x202, "HdrS", 4) && R8(p + 0x210) == 0xff ? "ok" : "BAD");
		puts(" code32_start=");
		puthex(R32(p + 0x214));
		puts("\n");
		for (u32 i = 0; i < R8(p + 0x1e8); i++) {
			u64 e = p + 0x2d0 + 20 * i;
			e820_line(R64(e), R64(e + 8), R32(e + 16), &ram);
		}
		u64 ird = R32(p + 0x218) | ((u64)R32(p + 0xc0) << 32);
		u64 irs = R32(p + 0x21c) | ((u64)R32(p + 0xc4) << 32);
		if (irs)
			initrd_line(ird, irs);
		rsdp = R64(p + 0x70);
	} else {
		puts("TINY hello boot=pvh\n");
		puts("TINY start_info ");
		puts(R32(p) == 0x336ec578 ? "magic=ok" : "magic=BAD");
		puts(" version=");
		putdec(R32(p + 4));
		puts("\n");
		u64 map = R64(p + 40);
		for (u32 i = 0; i < R32(p + 48); i++)
			e820_line(R64(map + 24 * i), R64(map + 24 * i + 8), R32(map + 24 * i + 16), &ram);
		if (R32(p + 12)) {
			u64 m = R64(p + 16);
			initrd_line(R64(m), R64(m + 8));
		}
		rsdp = R64(p + 32);
	}
	puts("TINY cmdline=");
	puts(cmdline ? cmdline : "(none)");
	puts("\n");
	puts("TINY ram=");
	putdec(ram);
	puts("\n");
	acpi(rsdp);
	if (madt_lapics > 1)
		start_aps();
	puts("TINY ready\n");

	const char *a = cmdline ? cmdline_value(cmdline, "tiny.action=") : 0;
	if (!a || word_is(a, "poweroff")) {
		puts("TINY action=poweroff\n");
		acpi_poweroff();
	} else if (word_is(a, "reboot")) {
		puts("TINY action=reboot\n");
		outb(0x64, 0xfe);
	} else if (word_is(a, "panic")) {
		puts("TINY action=panic\n");
		if (inb(0x505) & 1)
			outb(0x505, 1);
	} else if (word_is(a, "triple")) {
		puts("TINY action=triple\n");
		struct __attribute__((packed)) {
			u16 limit;
			u64 base;
		} idt = {0, 0};
		const char *how = cmdline_value(cmdline, "tiny.triple=");
		if (how && word_is(how, "int3"))
			__asm__ volatile("lidt %0; int3" : : "m"(idt));
		else if (how && word_is(how, "gp"))
			__asm__ volatile("lidt %0; movq $0x8000000000000000, %%rax; movq (%%rax), %%rax" : : "m"(idt) : "rax");
		else if (how && word_is(how, "div"))
			__asm__ volatile("lidt %0; xor %%ecx, %%ecx; xor %%edx, %%edx; mov $1, %%eax; div %%ecx" : : "m"(idt) : "rax", "rcx", "rdx");
		else
			__asm__ volatile("lidt %0; ud2" : : "m"(idt));
	} else if (word_is(a, "echo")) {
		puts("TINY action=echo\n");
		outb(0x3fa, 1); /* FCR: FIFOs on */
		outb(0x3f9, 1); /* IER: received-data interrupt on (IF stays 0) */
		for (;;) {
			if (!(inb(0x3fd) & 1)) {
				__asm__ volatile("pause");
				continue;
			}
			char c = (char)inb(0x3f8);
			puts("TINY got ");
			putc(c);
			puts("\n");
			if (c == 'q') {
				acpi_poweroff();
				break;
			}
		}
	} else if (word_is(a, "mmio")) {
		/* Read the first virtio-mmio device's magic, write it back at 0x70. */
		puts("TINY action=mmio\n");
		if (virtio_base) {
			map_mmio(virtio_base);
			u32 magic = R32(virtio_base);
			puts("TINY mmio magic=");
			puthex(magic);
			puts("\n");
			R32(virtio_base + 0x70) = magic;
		}
		acpi_poweroff();
	} else if (word_is(a, "hang")) {
		puts("TINY action=hang\n");
		for (;;)
			__asm__ volatile("cli; hlt");
	}
	puts("TINY action returned\n");
}
