// The agent's small Prometheus registry (src/agent/metrics.ts): what /status derives from it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter } from '../../src/agent/metrics.ts';

test('a counter sums the series whose labels include the ones asked for', () => {
  const c = new Counter('flatnet_test_total', 'test');
  c.inc({ command: 'ADD', result: 'ok' });
  c.inc({ command: 'ADD', result: 'ok' });
  c.inc({ command: 'DEL', result: 'ok' }, 3);
  c.inc({ command: 'DEL', result: 'declined' });
  assert.equal(c.sum({ result: 'ok' }), 5);
  assert.equal(c.sum({ result: 'declined' }), 1);
  assert.equal(c.sum({ command: 'ADD', result: 'ok' }), 2);
  assert.equal(c.sum({ result: 'error' }), 0);
  assert.equal(c.sum({}), 6, 'no labels asked for: every series');
  assert.equal(c.get({ result: 'ok', command: 'ADD' }), 2, 'get names one series, in any label order');
});
