//! s3: kvm-unit-tests' s3 (x86/s3.c), suspend to RAM and resume: the test points the ACPI
//! FACS's waking vector at real-mode code of its own, enables the RTC as a wake-up source
//! (PM1a_EN.RTC_EN), arms the RTC alarm for every second, and enters S3 by writing `\_S3`'s
//! SLP_TYP with SLP_EN to PM1a_CNT. The alarm wakes the machine; the firmware (SeaBIOS) finds
//! the resume in the CMOS shutdown status and jumps to the waking vector in real mode, where
//! the test's code checks that the CPU never ran past SLP_EN (a marker the 64-bit loop after
//! it sets stays 0), writes its report and the SUMMARY to COM1, and ends the VM.
//!
//! The runtime itself cannot be resumed: QEMU's wake-up is a system reset, whose rom_reset
//! (hw/core/loader.c) writes the `-kernel` ELF's segments back into RAM (and zeroes its .bss:
//! the page tables), so only memory outside the image (the real-mode area) survives.
//!
//! It needs firmware that resumes through the FACS (SeaBIOS; qboot has no S3 resume and boots
//! the kernel again, forever), and `\_S3` in the DSDT (QEMU's pc and q35 offer it unless
//! `disable_s3=1`); it skips without them.
#![no_std]
#![no_main]

use vmunit::arch::acpi::{
    PM1_CONTROL_SLEEP_ENABLE, PM1_CONTROL_SLEEP_TYPE_SHIFT, PM1_ENABLE_RTC, s3_sleep_type, set_waking_vector,
    sleep_control,
};
use vmunit::arch::instructions::{in_u8, out_u8, out_u16};
use vmunit::arch::interrupts;
use vmunit::arch::realmode::install_waking_vector;
use vmunit::{realmode_data, realmode_routine, report, report_fail, report_info, report_skip};

vmunit::main!(main);

/// CMOS index port and data port.
const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
/// RTC registers: alarm seconds, minutes, hours; status A, B, C.
const RTC_SECONDS_ALARM: u8 = 1;
const RTC_MINUTES_ALARM: u8 = 3;
const RTC_HOURS_ALARM: u8 = 5;
const RTC_STATUS_A: u8 = 10;
const RTC_STATUS_B: u8 = 11;
const RTC_STATUS_C: u8 = 12;
/// An alarm field that matches every value.
const RTC_ALARM_DONT_CARE: u8 = 0xc0;
/// Status A: an update is in progress.
const RTC_UPDATE_IN_PROGRESS: u8 = 0x80;
/// Status B: the alarm interrupt is enabled.
const RTC_ALARM_INTERRUPT_ENABLE: u8 = 0x20;

// The resume's messages count the report before the sleep (it passed, or the test does not
// sleep) and its own.
// 0 from just before SLP_EN; set to 1 by every turn of the loop after it, which runs only if
// the machine did not sleep at once.
realmode_data!(MARKER = ".long 0xffffffff");
realmode_data!(
    RESUMED = ".asciz \"PASS: resumed at the FACS waking vector in real mode, and the CPU did not run past SLP_EN\\nSUMMARY: 2 tests\\n\\nEXIT: STATUS=1\\n\""
);
realmode_data!(
    RAN_ON = ".asciz \"FAIL: resumed at the FACS waking vector in real mode, but the CPU ran past SLP_EN first\\nSUMMARY: 2 tests, 1 unexpected failures\\n\\nEXIT: STATUS=3\\n\""
);

// The waking vector: firmware enters it in real mode with CS = vector >> 4. It moves to
// segment 0, picks the message by the marker, writes it to COM1 and ends the VM through
// isa-debug-exit (port 0xf4: status (code << 1) | 1).
realmode_routine!(
    RESUME = "ljmpw $0, $1f",
    "1: cli",
    "xorw %ax, %ax",
    "movw %ax, %ds",
    "cld",
    "movl vmunit_realmode_data_MARKER, %eax",
    "movw $vmunit_realmode_data_RESUMED, %si",
    "xorl %ebx, %ebx",
    "testl %eax, %eax",
    "jz 2f",
    "movw $vmunit_realmode_data_RAN_ON, %si",
    "movl $1, %ebx",
    "2: movw $0x3f8, %dx",
    "3: lodsb",
    "testb %al, %al",
    "jz 4f",
    "outb %al, %dx",
    "jmp 3b",
    "4: movw $0xf4, %dx",
    "movl %ebx, %eax",
    "outl %eax, %dx",
    "5: hlt",
    "jmp 5b",
);

fn rtc_read(register: u8) -> u8 {
    out_u8(CMOS_INDEX, register);
    in_u8(CMOS_DATA)
}

fn rtc_write(register: u8, value: u8) {
    out_u8(CMOS_INDEX, register);
    out_u8(CMOS_DATA, value);
}

fn main(_args: &[&str]) {
    let Some(control) = sleep_control() else {
        report_skip!("no FADT with a FACS: the machine has no ACPI sleep states (use pc or q35)");
        return;
    };
    let Some(sleep_type) = s3_sleep_type() else {
        report_skip!("the DSDT has no \\_S3: the firmware offers no S3 (PIIX4_PM/ICH9-LPC disable_s3=1?)");
        return;
    };
    report_info!(
        "FACS at {:#x}, PM1a event block {:#x}, PM1a control block {:#x}, \\_S3 SLP_TYP {sleep_type}",
        control.facs,
        control.pm1a_event,
        control.pm1a_control
    );
    let vector = install_waking_vector(&RESUME);
    // The FACS is RAM: reading back what was just written there checks the runtime, not the
    // machine. A precondition (no PASS); the resume at that vector is the check.
    let read_back = set_waking_vector(&control, vector);
    let vector_set = read_back == Some(vector);
    if !vector_set {
        report_fail!(
            "the FACS waking vector does not hold the resume code's address {vector:#x} (read back {read_back:x?})"
        );
    }

    // Wake up by the RTC: its enable bit in PM1a_EN, and an alarm every second, armed just
    // after an update so that the next one is a whole second away.
    out_u16(control.pm1a_event + 2, PM1_ENABLE_RTC);
    while rtc_read(RTC_STATUS_A) & RTC_UPDATE_IN_PROGRESS == 0 {}
    while rtc_read(RTC_STATUS_A) & RTC_UPDATE_IN_PROGRESS != 0 {}
    rtc_read(RTC_STATUS_C);
    rtc_write(RTC_SECONDS_ALARM, RTC_ALARM_DONT_CARE);
    rtc_write(RTC_MINUTES_ALARM, RTC_ALARM_DONT_CARE);
    rtc_write(RTC_HOURS_ALARM, RTC_ALARM_DONT_CARE);
    rtc_write(RTC_STATUS_B, rtc_read(RTC_STATUS_B) | RTC_ALARM_INTERRUPT_ENABLE);
    let status_b = rtc_read(RTC_STATUS_B);
    let alarm_armed = status_b & RTC_ALARM_INTERRUPT_ENABLE != 0;
    report!(
        alarm_armed,
        "the RTC alarm interrupt is enabled (status B {status_b:#x})"
    );
    if !(vector_set && alarm_armed) {
        return;
    }

    interrupts::disable();
    MARKER.write(0, &0u32.to_le_bytes());
    out_u16(
        control.pm1a_control,
        u16::from(sleep_type) << PM1_CONTROL_SLEEP_TYPE_SHIFT | PM1_CONTROL_SLEEP_ENABLE,
    );
    loop {
        MARKER.write(0, &1u32.to_le_bytes());
    }
}
