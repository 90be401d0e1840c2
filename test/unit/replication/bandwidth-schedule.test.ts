import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatLinkBandwidth,
  inSchedule,
  linkRateAt,
  parseBandwidthSchedule,
  parseLinkBandwidth,
} from '../../../src/replication/bandwidth-schedule.js';
import { nextLink } from '../../../src/replication/peer-links.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

/** A local time: 2026-12-07 is a Monday (months count from 0). */
const at = (day: number, hh: number, mm = 0): Date => new Date(2026, 11, 7 + day, hh, mm);
const MON = 0;
const FRI = 4;
const SAT = 5;
const SUN = 6;

test('bandwidth is bits per second: 50M is 50 Mbit/s; none removes the cap', () => {
  assert.equal(parseLinkBandwidth('50M'), 50_000_000);
  assert.equal(parseLinkBandwidth('1.5G'), 1_500_000_000);
  assert.equal(parseLinkBandwidth('500k'), 500_000);
  assert.equal(parseLinkBandwidth('100Mbit/s'), 100_000_000);
  assert.equal(parseLinkBandwidth(' none '), null);
  assert.equal(formatLinkBandwidth(50_000_000), '50M');
  assert.equal(formatLinkBandwidth(1_500_000_000), '1.5G');
});

test('bad bandwidth is refused with a typed error naming the form to use', () => {
  for (const bad of ['50', '50MB', '50 MiB', 'fast', '-5M', '', '5T']) {
    assert.throws(
      () => parseLinkBandwidth(bad),
      (e: unknown) => isMamoriError(e, 'INVALID_INPUT') && /50M = 50 Mbit\/s/.test(e.message),
      bad,
    );
  }
  assert.throws(
    () => parseLinkBandwidth('10K'),
    (e: unknown) => isMamoriError(e, 'OUT_OF_RANGE'),
  );
  assert.throws(
    () => parseLinkBandwidth('500G'),
    (e: unknown) => isMamoriError(e, 'OUT_OF_RANGE'),
  );
});

test('office hours: inside Mon-Fri 08:00-18:00, outside at night and at the weekend', () => {
  const w = parseBandwidthSchedule('Mon-Fri 08:00-18:00');
  assert.deepEqual(w, [{ days: [1, 2, 3, 4, 5], startMinute: 480, endMinute: 1080 }]);
  assert.equal(inSchedule(w, at(MON, 8, 0)), true, 'the start is inside');
  assert.equal(inSchedule(w, at(FRI, 17, 59)), true);
  assert.equal(inSchedule(w, at(FRI, 18, 0)), false, 'the end is outside');
  assert.equal(inSchedule(w, at(MON, 7, 59)), false);
  assert.equal(inSchedule(w, at(SAT, 12, 0)), false);
  assert.equal(inSchedule(w, at(SUN, 12, 0)), false);
});

test('several windows, Daily, 24:00 and windows over midnight', () => {
  const w = parseBandwidthSchedule('Mon-Fri 08:00-18:00, Sat 09:00-12:00');
  assert.equal(inSchedule(w, at(SAT, 10)), true);
  assert.equal(inSchedule(w, at(SAT, 13)), false);
  assert.equal(inSchedule(w, at(SUN, 10)), false);

  const evening = parseBandwidthSchedule('daily 20:00-24:00');
  assert.equal(inSchedule(evening, at(SUN, 23, 59)), true);
  assert.equal(inSchedule(evening, at(MON, 0, 0)), false);

  // Friday night into Saturday morning; not Thursday's early hours.
  const night = parseBandwidthSchedule('Fri 22:00-06:00');
  assert.equal(inSchedule(night, at(FRI, 23)), true);
  assert.equal(inSchedule(night, at(SAT, 5, 59)), true);
  assert.equal(inSchedule(night, at(SAT, 6)), false);
  assert.equal(inSchedule(night, at(FRI, 5)), false);

  // A range over the week's end.
  const weekend = parseBandwidthSchedule('Sat-Mon 00:00-24:00');
  assert.deepEqual(weekend[0]!.days, [6, 0, 1]);
});

test('bad schedules are refused with LINK_SCHEDULE_INVALID naming the window at fault', () => {
  const cases: [string, RegExp][] = [
    ['Mon-Fri 8:00-18:00', /DAYS HH:MM-HH:MM/],
    ['Mon-Fri', /DAYS HH:MM-HH:MM/],
    ['Mon-Fri 08:00-18:00,', /window ""/],
    ['Mon-Fri 08:00-18:00,Sat 09:00', /window "Sat 09:00"/],
    ['Moon 08:00-18:00', /"Moon" is not a day/],
    ['Mon-Fry 08:00-18:00', /"Fry" is not a day/],
    ['Mon 25:00-26:00', /25:00 is not a time of day/],
    ['Mon 08:60-09:00', /08:60 is not a time of day/],
    ['Mon 24:00-06:00', /cannot start at 24:00/],
    ['Mon 08:00-08:00', /starts and ends at the same time/],
    ['Mon-Tue-Wed 08:00-09:00', /DAYS HH:MM-HH:MM/],
    [Array.from({ length: 33 }, () => 'Mon 08:00-09:00').join(','), /more than 32 windows/],
  ];
  for (const [text, why] of cases) {
    assert.throws(
      () => parseBandwidthSchedule(text),
      (e: unknown) =>
        isMamoriError(e, 'LINK_SCHEDULE_INVALID') &&
        why.test(e.message) &&
        /local time of this site/.test(e.message) &&
        typeof e.details?.['window'] === 'string',
      text,
    );
  }
});

test('the rate in force: the cap inside the windows, none outside, always without a schedule', () => {
  const limit = { bitsPerSecond: 80_000_000, schedule: 'Mon-Fri 08:00-18:00' };
  const w = parseBandwidthSchedule(limit.schedule);
  assert.equal(linkRateAt(limit, w, at(MON, 9)), 10_000_000, '80 Mbit/s is 10 MB/s');
  assert.equal(linkRateAt(limit, w, at(MON, 19)), null);
  assert.equal(linkRateAt({ bitsPerSecond: 8_000_000, schedule: null }, null, at(SUN, 3)), 1_000_000);
  assert.equal(linkRateAt({ bitsPerSecond: null, schedule: null }, null, at(MON, 9)), null);
});

test('a link change is checked whole: fields left out stay, none clears, a schedule needs a cap', () => {
  const none = { bitsPerSecond: null, schedule: null, concurrency: null };
  const capped = nextLink(none, { bandwidth: '50M', schedule: 'Mon-Fri 08:00-18:00' });
  assert.deepEqual(capped, { bitsPerSecond: 50_000_000, schedule: 'Mon-Fri 08:00-18:00', concurrency: null });
  assert.deepEqual(nextLink(capped, { concurrency: 2 }), { ...capped, concurrency: 2 });
  assert.deepEqual(nextLink(capped, { schedule: 'none' }), { ...capped, schedule: null });
  assert.deepEqual(nextLink(capped, { bandwidth: 'none' }), none, 'no cap, no schedule');
  assert.throws(
    () => nextLink(none, {}),
    (e: unknown) => isMamoriError(e, 'INVALID_INPUT'),
  );
  assert.throws(
    () => nextLink(none, { schedule: 'Mon 08:00-09:00' }),
    (e: unknown) => isMamoriError(e, 'INVALID_INPUT') && /give --bandwidth too/.test(e.message),
  );
  assert.throws(
    () => nextLink(capped, { schedule: 'Mon 8-9' }),
    (e: unknown) => isMamoriError(e, 'LINK_SCHEDULE_INVALID'),
  );
  for (const n of [0, 65, 1.5])
    assert.throws(
      () => nextLink(none, { concurrency: n }),
      (e: unknown) => isMamoriError(e, 'OUT_OF_RANGE'),
    );
});
