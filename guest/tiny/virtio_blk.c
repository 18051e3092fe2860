/*
 * A minimal virtio-mmio block driver for the tiny guest, doing what Linux's
 * virtio_mmio.c and virtio_blk.c do, with polling instead of interrupts:
 * find the device in the DSDT (LNRO0005, Memory32Fixed + Interrupt), check
 * magic/version/device id, reset, ACKNOWLEDGE, DRIVER, negotiate
 * VIRTIO_F_VERSION_1 (and FLUSH), FEATURES_OK and its readback, read the capacity, set
 * up queue 0, DRIVER_OK, then read sector 1 and write sector 2 (the data to
 * write comes from tiny.blk.write= on the command line), then flush.
 */
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define R8(a) (*(volatile u8 *)(uintptr_t)(a))
#define R16(a) (*(volatile u16 *)(uintptr_t)(a))
#define R32(a) (*(volatile u32 *)(uintptr_t)(a))
#define R64(a) (*(volatile u64 *)(uintptr_t)(a))
#define barrier() __asm__ volatile("" ::: "memory")

void puts(const char *s);
void puthex(u64 v);
void putdec(u64 v);
void putc(char c);
void map_mmio(u64 addr);

#define QSIZE 8

struct desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

static struct {
	struct desc d[QSIZE];
	u16 avail_flags, avail_idx, avail_ring[QSIZE], used_event;
	u8 pad[4096 - 16 * QSIZE - 6 - 2 * QSIZE];
	u16 used_flags, used_idx;
	struct {
		u32 id, len;
	} used[QSIZE];
	u16 avail_event;
} __attribute__((aligned(4096))) vq;

static struct {
	u32 type, reserved;
	u64 sector;
} __attribute__((aligned(16))) hdr;
static u8 data[512] __attribute__((aligned(512)));
static volatile u8 status_byte;

/* Finds the first LNRO0005 device in the DSDT; returns its MMIO base. */
static u64 find_in_dsdt(u64 dsdt, u32 *irq)
{
	u32 len = R32(dsdt + 4);
	for (u64 p = dsdt + 36; p + 8 < dsdt + len; p++) {
		const char *id = "LNRO0005";
		int i = 0;
		while (i < 8 && R8(p + i) == (u8)id[i])
			i++;
		if (i < 8)
			continue;
		u64 base = 0;
		for (u64 q = p + 8; q + 12 < dsdt + len && q < p + 128; q++) {
			if (!base && R8(q) == 0x86 && R8(q + 1) == 9 && R8(q + 2) == 0)
				base = R32(q + 4);
			if (base && R8(q) == 0x89 && R8(q + 1) == 6 && R8(q + 2) == 0 && R8(q + 4) == 1) {
				*irq = R32(q + 5);
				return base;
			}
		}
		return base;
	}
	return 0;
}

static int do_request(u64 base, u32 type, u64 sector, u16 *last_used)
{
	hdr.type = type;
	hdr.reserved = 0;
	hdr.sector = sector;
	status_byte = 0xff;
	if (type == 4) { /* FLUSH: header and status only */
		vq.d[0] = (struct desc){(u64)(uintptr_t)&hdr, 16, 1, 2};
	} else {
		vq.d[0] = (struct desc){(u64)(uintptr_t)&hdr, 16, 1, 1};
		vq.d[1] = (struct desc){(u64)(uintptr_t)data, 512, (u16)(1 | (type == 0 ? 2 : 0)), 2};
	}
	vq.d[2] = (struct desc){(u64)(uintptr_t)&status_byte, 1, 2, 0};
	vq.avail_ring[vq.avail_idx % QSIZE] = 0;
	barrier();
	vq.avail_idx++;
	barrier();
	R32(base + 0x50) = 0; /* QueueNotify: KVM's ioeventfd, datamatch 0 */
	for (u64 spin = 0; spin < 2000000000ull; spin++) {
		barrier();
		if (*(volatile u16 *)&vq.used_idx != *last_used)
			break;
		__asm__ volatile("pause");
	}
	barrier();
	if (*(volatile u16 *)&vq.used_idx == *last_used)
		return -1;
	(*last_used)++;
	u32 isr = R32(base + 0x60);
	R32(base + 0x64) = isr; /* InterruptACK */
	puts("TINY blk isr=");
	putdec(isr);
	puts("\n");
	return status_byte;
}

static void fail(const char *why)
{
	puts("TINY blk FAILED ");
	puts(why);
	puts("\n");
}

void virtio_blk_test(u64 dsdt, const char *wr)
{
	u32 irq = 0;
	u64 base = dsdt ? find_in_dsdt(dsdt, &irq) : 0;
	puts("TINY blk dsdt base=");
	puthex(base);
	puts(" irq=");
	putdec(irq);
	puts("\n");
	if (!base)
		return fail("no LNRO0005 device");
	map_mmio(base);
	if (R32(base) != 0x74726976 || R32(base + 4) != 2 || R32(base + 8) != 2)
		return fail("not a virtio-mmio v2 block device");
	R32(base + 0x70) = 0;
	if (R32(base + 0x70) != 0)
		return fail("reset");
	R32(base + 0x70) = 1;
	R32(base + 0x70) = 1 | 2;
	R32(base + 0x14) = 1;
	u32 f1 = R32(base + 0x10);
	R32(base + 0x14) = 0;
	u32 f0 = R32(base + 0x10);
	puts("TINY blk features=");
	puthex(((u64)f1 << 32) | f0);
	puts("\n");
	if (!(f1 & 1))
		return fail("no VERSION_1");
	R32(base + 0x24) = 1;
	R32(base + 0x20) = 1; /* VERSION_1 only */
	R32(base + 0x24) = 0;
	R32(base + 0x20) = f0 & (1u << 9); /* VIRTIO_BLK_F_FLUSH if offered */
	R32(base + 0x70) = 1 | 2 | 8;
	if (!(R32(base + 0x70) & 8))
		return fail("FEATURES_OK did not stick");
	u64 cap = R32(base + 0x100) | ((u64)R32(base + 0x104) << 32);
	puts("TINY blk capacity=");
	putdec(cap);
	puts(" ro=");
	putdec((f0 >> 5) & 1);
	puts("\n");
	R32(base + 0x30) = 0;
	if (R32(base + 0x44) != 0)
		return fail("queue already ready");
	if (R32(base + 0x34) < QSIZE)
		return fail("queue too small");
	R32(base + 0x38) = QSIZE;
	u64 d = (u64)(uintptr_t)vq.d, a = (u64)(uintptr_t)&vq.avail_flags, u = (u64)(uintptr_t)&vq.used_flags;
	R32(base + 0x80) = (u32)d;
	R32(base + 0x84) = (u32)(d >> 32);
	R32(base + 0x90) = (u32)a;
	R32(base + 0x94) = (u32)(a >> 32);
	R32(base + 0xa0) = (u32)u;
	R32(base + 0xa4) = (u32)(u >> 32);
	R32(base + 0x44) = 1;
	R32(base + 0x70) = 1 | 2 | 8 | 4;
	if (R32(base + 0x70) != (1 | 2 | 8 | 4))
		return fail("DRIVER_OK refused");

	u16 last = 0;
	int st = do_request(base, 0, 1, &last);
	puts("TINY blk read sector=1 status=");
	putdec((u64)(st & 0xff));
	puts(" data=");
	for (int i = 0; i < 32; i++)
		putc(data[i] >= 0x20 && data[i] < 0x7f ? (char)data[i] : '.');
	puts("\n");
	for (int i = 0; i < 512; i++)
		data[i] = 0;
	for (int i = 0; wr && wr[i] && wr[i] != ' ' && i < 512; i++)
		data[i] = (u8)wr[i];
	st = do_request(base, 1, 2, &last);
	puts("TINY blk write sector=2 status=");
	putdec((u64)(st & 0xff));
	puts("\n");
	st = do_request(base, 4, 0, &last); /* FLUSH */
	puts("TINY blk flush status=");
	putdec((u64)(st & 0xff));
	puts("\n");
}
