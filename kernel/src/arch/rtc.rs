//! The CMOS real-time clock, read once at boot for wall-clock time.

use x86_64::instructions::port::Port;

const INDEX_PORT: u16 = 0x70;
const DATA_PORT: u16 = 0x71;

fn read_register(register: u8) -> u8 {
    let mut index = Port::<u8>::new(INDEX_PORT);
    let mut data = Port::<u8>::new(DATA_PORT);
    // SAFETY: ports 0x70/0x71 are the CMOS index and data ports on every PC;
    // bit 7 of the index (NMI disable) is left clear as firmware leaves it.
    unsafe {
        index.write(register & 0x7f);
        data.read()
    }
}

fn is_update_in_progress() -> bool {
    read_register(0x0a) & 0x80 != 0
}

/// Seconds since the Unix epoch according to the RTC (taken as UTC, as QEMU
/// sets it), or None if it reads as nonsense.
pub fn read_unix_time_s() -> Option<u64> {
    // Read twice until two reads agree, outside an update cycle.
    let read = || {
        while is_update_in_progress() {
            core::hint::spin_loop();
        }
        [0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32].map(read_register)
    };
    let mut values = read();
    for _ in 0..5 {
        let again = read();
        if again == values {
            break;
        }
        values = again;
    }
    let status_b = read_register(0x0b);
    let is_binary = status_b & 0x04 != 0;
    let is_24_hour = status_b & 0x02 != 0;
    let decode = |value: u8| {
        if is_binary {
            u64::from(value)
        } else {
            u64::from(value & 0x0f) + u64::from(value >> 4) * 10
        }
    };
    let [second, minute, hour_raw, day, month, year, century] = values;
    let mut hour = decode(hour_raw & 0x7f);
    if !is_24_hour && hour_raw & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let century = match decode(century) {
        19..=21 => decode(century),
        _ => 20,
    };
    let year = century * 100 + decode(year);
    let (second, minute, day, month) = (decode(second), decode(minute), decode(day), decode(month));
    if second > 59
        || minute > 59
        || hour > 23
        || !(1..=31).contains(&day)
        || !(1..=12).contains(&month)
    {
        return None;
    }
    Some(days_from_civil(year, month, day)? * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given date (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).checked_sub(719_468)
}
