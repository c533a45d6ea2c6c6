// Drives tonewall's representative page in headless Chromium (playwright-core, system
// Chromium). Run by tests/ui_browser.rs, which owns the phones: this script asks for them on
// stdout and waits for "OK" on stdin:
//   DIAL <dnis>   the rep and customer legs dial the DNIS (answered: both legs up)
//   KEYS <keys>   the customer leg sends these RFC 4733 key presses
//   ENDED         the session was ended from the page: both legs must receive BYE
//   DONE          the scenario passed
// Usage: node ui.mjs digits|payment   (env TONEWALL_URL, TONEWALL_API_KEY, SCREENSHOT_DIR)
import { createInterface } from 'node:readline';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.TONEWALL_URL;
const KEY = process.env.TONEWALL_API_KEY;
const SHOTS = process.env.SCREENSHOT_DIR || '';
const SCENARIO = process.argv[2] || 'digits';
const TIMEOUT = 20000;

const lines = [];
const waiters = [];
createInterface({ input: process.stdin }).on('line', (l) => {
  const w = waiters.shift();
  if (w) w(l); else lines.push(l);
});
const nextLine = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiters.push(r)));

async function ask(cmd) {
  process.stdout.write(`${cmd}\n`);
  const answer = await nextLine();
  if (answer !== 'OK') throw new Error(`${cmd}: the harness answered ${answer}`);
}

function log(msg) { process.stdout.write(`LOG ${msg}\n`); }

function assert(cond, msg) { if (!cond) throw new Error(`assertion failed: ${msg}`); }

// ---- page helpers ---------------------------------------------------------------------

const field = (p, name) => p.locator(`.field[data-field="${name}"]`);

async function waitField(p, name, { masked, validity, complete, active }) {
  const f = field(p, name);
  const desc = JSON.stringify({ name, masked, validity, complete, active });
  try {
    await p.waitForFunction(
      ([n, m, v, c, a]) => {
        const el = document.querySelector(`.field[data-field="${n}"]`);
        if (!el) return false;
        const text = el.querySelector('.masked').textContent;
        return (m === null || text === m)
          && (v === null || el.querySelector('.validity').dataset.validity === v)
          && (c === null || el.dataset.complete === String(c))
          && (a === null || el.dataset.active === String(a));
      },
      [name, masked ?? null, validity ?? null, complete ?? null, active ?? null],
      { timeout: TIMEOUT },
    );
  } catch (e) {
    const now = await f.evaluate((el) => ({
      masked: el.querySelector('.masked').textContent,
      validity: el.querySelector('.validity').dataset.validity,
      complete: el.dataset.complete,
      active: el.dataset.active,
    })).catch(() => 'missing');
    throw new Error(`field never became ${desc}; it is ${JSON.stringify(now)}`);
  }
}

async function waitState(p, state) {
  try {
    await p.locator(`#state[data-state="${state}"]`).waitFor({ timeout: TIMEOUT });
  } catch (e) {
    const now = await p.locator('#state').getAttribute('data-state');
    throw new Error(`state never became ${state}; it is ${now}`);
  }
}

// Every masked text on the page: only '*' and, for a long card number, its last four.
async function assertOnlyMasked(p, pans) {
  const body = await p.evaluate(() => document.body.innerText);
  for (const pan of pans) {
    for (let i = 0; i + 6 <= pan.length; i++) {
      const run = pan.slice(i, i + 6);
      if (new Set(run).size < 2) continue; // "000000" says nothing about a card
      assert(!body.includes(run), 'the page shows 6 consecutive digits of a card number');
    }
  }
  const masks = await p.locator('.field .masked').allTextContents();
  for (const m of masks) assert(/^\**\d{0,4}$/.test(m), `a field shows only a masked value (got ${m.length} chars)`);
}

// Script errors and CSP violations fail the scenario (failed API calls are expected: the
// wrong key on purpose, the sign-in probe's 404).
const pageErrors = [];
function watchErrors(p) {
  p.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
  p.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(`console: ${m.text()}`);
  });
}
function assertNoPageErrors() {
  assert(pageErrors.length === 0, `no script errors or CSP violations: ${pageErrors.join('; ')}`);
}

async function signIn(p) {
  watchErrors(p);
  await p.locator('#api-key').fill('not-a-valid-key');
  await p.locator('#signin-btn').click();
  await p.locator('#signin-error').waitFor({ state: 'visible', timeout: TIMEOUT });
  await p.locator('#api-key').fill(KEY);
  await p.locator('#signin-btn').click();
  await p.locator('#start').waitFor({ state: 'visible', timeout: TIMEOUT });
  const stored = await p.evaluate(() => JSON.stringify(window.localStorage) + JSON.stringify(window.sessionStorage) + document.cookie);
  assert(!stored.includes(KEY), 'the API key is not kept in storage or cookies');
}

// Secure the call whose id is in the form; dial; wait until bridged. Returns the DNIS.
async function secureAndBridge(p) {
  await p.locator('#secure-btn').click();
  await p.locator('#session').waitFor({ state: 'visible', timeout: TIMEOUT });
  await waitState(p, 'waiting_legs');
  const dnis = (await p.locator('#dnis').textContent()).trim();
  assert(/^\+?\d{4,}$/.test(dnis), `a DNIS to dial is shown (${dnis})`);
  await ask(`DIAL ${dnis}`);
  await waitState(p, 'bridged');
  await p.locator('#leg-rep[data-state="up"]').waitFor({ timeout: TIMEOUT });
  await p.locator('#leg-customer[data-state="up"]').waitFor({ timeout: TIMEOUT });
  await waitField(p, 'pan', { masked: '', active: true });
  return dnis;
}

async function endFromPage(p) {
  await p.locator('#end-btn').click();
  await waitState(p, 'ended');
  await ask('ENDED');
  await p.locator('#new-btn').waitFor({ state: 'visible', timeout: TIMEOUT });
}

async function pay(p, amount, cardholder) {
  await p.locator('#amount').fill(amount);
  await p.locator('#currency').fill('AUD');
  await p.locator('#description').fill('Invoice 1042');
  await p.locator('#cardholder').fill(cardholder);
  await p.waitForFunction(() => !document.getElementById('pay-btn').disabled, null, { timeout: TIMEOUT });
  await p.locator('#pay-btn').click();
  try {
    await p.locator('#result').waitFor({ state: 'visible', timeout: TIMEOUT });
  } catch (e) {
    const err = await p.locator('#pay-error').textContent();
    throw new Error(`no payment result; the page says: ${err}`);
  }
}

// ---- scenarios ------------------------------------------------------------------------

const GOOD_PAN = '4539576823184677';
const BAD_PAN = '4539576823184678'; // fails Luhn
const DECLINE_PAN = '4000000000000002';
const ERROR_PAN = '4000000000000119'; // sandbox: processing error

async function digits(browser) {
  // Embedded in a CRM page on another origin: the page must load inside the iframe.
  const crm = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!doctype html><title>CRM</title><h1>CRM</h1><iframe id="tw" src="${BASE}/ui/?call_id=crm-call" style="width:380px;height:600px"></iframe>`);
  });
  await new Promise((r) => crm.listen(0, '127.0.0.1', r));
  const framed = await browser.newPage();
  await framed.goto(`http://127.0.0.1:${crm.address().port}/`);
  await framed.frameLocator('#tw').locator('#signin-btn').waitFor({ timeout: TIMEOUT });
  await framed.close();
  crm.close();
  log('the page loads inside a cross-origin iframe');

  // A narrow screen (phone-sized).
  const ctx = await browser.newContext({ viewport: { width: 390, height: 1100 }, deviceScaleFactor: 1 });
  const p = await ctx.newPage();
  await p.goto(`${BASE}/ui/?call_id=call-ui-1&rep=rep-7`);
  await signIn(p);
  assert(await p.locator('#call-id').inputValue() === 'call-ui-1', 'call id from the URL');
  assert(await p.locator('#rep').inputValue() === 'rep-7', 'rep from the URL');
  await secureAndBridge(p);
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert(overflow <= 0, `no horizontal scrolling on a narrow screen (${overflow}px too wide)`);

  // Digits appear masked as they arrive.
  await ask('KEYS 4');
  await waitField(p, 'pan', { masked: '*', validity: 'typing' });
  await ask('KEYS 539');
  await waitField(p, 'pan', { masked: '****' });
  await assertOnlyMasked(p, [GOOD_PAN]);
  // * clears the active field.
  await ask('KEYS *');
  await waitField(p, 'pan', { masked: '', validity: 'empty', active: true });
  // An invalid card number is marked invalid; # moves on to the expiry.
  await ask(`KEYS ${BAD_PAN}#`);
  await waitField(p, 'pan', { masked: '************4678', validity: 'invalid', complete: true, active: false });
  await waitField(p, 'expiry', { active: true });
  assert(await p.locator('#pay-btn').isDisabled(), 'no payment with an invalid card number');
  await assertOnlyMasked(p, [BAD_PAN]);
  // Per-field reset and activate.
  await field(p, 'pan').locator('.reset').click();
  await waitField(p, 'pan', { masked: '', validity: 'empty' });
  await field(p, 'pan').locator('.activate').click();
  await waitField(p, 'pan', { active: true });
  await waitField(p, 'expiry', { active: false });
  // A good card: the expiry completes at 4 digits and moves on by itself.
  await ask(`KEYS ${GOOD_PAN}#`);
  await waitField(p, 'pan', { masked: '************4677', validity: 'valid', complete: true });
  await ask('KEYS 1234');
  await waitField(p, 'expiry', { masked: '****', validity: 'valid', complete: true });
  await waitField(p, 'cvv', { active: true });
  await ask('KEYS 123#');
  await waitField(p, 'cvv', { masked: '***', validity: 'valid', complete: true });
  await p.waitForFunction(() => !document.getElementById('pay-btn').disabled, null, { timeout: TIMEOUT });
  await assertOnlyMasked(p, [GOOD_PAN, BAD_PAN]);
  await p.locator('#amount').fill('49.95');
  await p.locator('#description').fill('Invoice 1042');
  await p.locator('#cardholder').fill('J Citizen');
  if (SHOTS) await p.screenshot({ path: join(SHOTS, 'ui-bridged-masked.png'), fullPage: true });
  await endFromPage(p);
  await ctx.close();
}

async function payment(browser) {
  const ctx = await browser.newContext({ viewport: { width: 900, height: 1000 }, deviceScaleFactor: 1 });
  const p = await ctx.newPage();
  await p.goto(`${BASE}/ui/?call_id=call-pay-1&rep=rep-7`);
  await signIn(p);

  // Approved with a sandbox card that approves.
  await secureAndBridge(p);
  await ask(`KEYS ${GOOD_PAN}#1234123#`);
  await waitField(p, 'cvv', { masked: '***', validity: 'valid', complete: true });
  await pay(p, '49.95', 'J Citizen');
  assert(await p.locator('#result').getAttribute('data-status') === 'approved', 'the approve card is approved');
  assert(/(^|\s)\*{12}4677$/.test(await p.locator('#result-pan').textContent()), 'the result shows the masked card number');
  assert((await p.locator('#result-reference').textContent()).trim().length > 1, 'a gateway reference');
  assert(/you may now end the secure session/i.test(await p.locator('#result-next').textContent()), 'the rep is told to end');
  assert(await p.locator('#pay-btn').isDisabled(), 'no second charge from the page');
  await assertOnlyMasked(p, [GOOD_PAN]);
  if (SHOTS) await p.screenshot({ path: join(SHOTS, 'ui-payment-approved.png'), fullPage: true });
  await endFromPage(p);

  // Declined cleanly with the sandbox decline card, in a second session.
  await p.locator('#new-btn').click();
  await p.locator('#call-id').fill('call-pay-2');
  await secureAndBridge(p);
  await ask(`KEYS ${DECLINE_PAN}#1234123#`);
  await waitField(p, 'cvv', { masked: '***', validity: 'valid', complete: true });
  await pay(p, '10.00', 'J Citizen');
  assert(await p.locator('#result').getAttribute('data-status') === 'declined', 'the decline card is declined');
  assert(/declined/i.test(await p.locator('#result-status').textContent()), 'the page says declined');
  assert(/(^|\s)\*{12}0002$/.test(await p.locator('#result-pan').textContent()), 'masked card number of the declined card');
  assert(!(await p.locator('#pay-error').isVisible()), 'a decline is a result, not an error');
  await assertOnlyMasked(p, [GOOD_PAN, DECLINE_PAN]);
  await endFromPage(p);

  // A gateway error (the API answers 502) is an error on the page, not a result.
  await p.locator('#new-btn').click();
  await p.locator('#call-id').fill('call-pay-3');
  await secureAndBridge(p);
  await ask(`KEYS ${ERROR_PAN}#1234123#`);
  await waitField(p, 'cvv', { masked: '***', validity: 'valid', complete: true });
  await p.locator('#amount').fill('5.00');
  await p.locator('#cardholder').fill('J Citizen');
  await p.locator('#pay-btn').click();
  await p.locator('#pay-error').waitFor({ state: 'visible', timeout: TIMEOUT });
  assert(!(await p.locator('#result').isVisible()), 'no approved/declined result after a gateway error');
  await assertOnlyMasked(p, [ERROR_PAN]);
  await endFromPage(p);
  await ctx.close();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let code = 0;
try {
  if (SCENARIO === 'digits') await digits(browser);
  else if (SCENARIO === 'payment') await payment(browser);
  else throw new Error(`unknown scenario ${SCENARIO}`);
  assertNoPageErrors();
  process.stdout.write('DONE\n');
} catch (e) {
  process.stdout.write(`FAIL ${String(e && e.stack || e).replace(/\n/g, ' | ')}\n`);
  code = 1;
} finally {
  await browser.close().catch(() => {});
}
process.exit(code);
