// Drives the Strata web console in headless Chromium, as a user would with a keyboard and a
// mouse: `node console_flow.mjs topic BASE TOPIC VALUE SHOTS` creates a topic from the form,
// produces a message from the form and finds it by offset and by substring;
// `node console_flow.mjs group BASE GROUP SHOTS` opens the group's page from the list.
// Prints one JSON line with what it saw; screenshots go to SHOTS.
import { chromium } from "playwright-core";

const [phase, base, name, ...rest] = process.argv.slice(2);
const shots = rest[rest.length - 1];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(15000);
const shot = (file) => page.screenshot({ path: `${shots}/${file}`, fullPage: true });
const result = {};

try {
  if (phase === "topic") {
    const value = rest[0];
    await page.goto(`${base}/ui/topics`);
    await page.fill("#create-topic input[name=name]", name);
    await page.fill("#create-topic input[name=partitions]", "1");
    await Promise.all([page.waitForURL(`**/ui/topics/${name}?created=1`), page.click("#create-topic button")]);
    result.created = (await page.textContent("#notice")).trim();
    await shot("01-topic-created.png");

    await page.fill("#produce input[name=key]", "browser-key");
    await page.fill("#produce textarea[name=value]", value);
    await page.fill("#produce textarea[name=headers]", "source=console");
    await Promise.all([page.waitForURL(/produced=/), page.click("#produce button")]);
    const produced = new URL(page.url()).searchParams.get("produced");
    result.offset = Number(produced);
    result.notice = (await page.textContent("#notice")).trim();
    await shot("02-produced.png");

    // Find it by offset, through the browse form.
    await page.fill("#browse input[name=partition]", "0");
    await page.selectOption("#browse select[name=from]", "offset");
    await page.fill("#browse input[name=offset]", String(result.offset));
    await Promise.all([page.waitForURL(/from=offset/), page.click("#browse button")]);
    const byOffset = page.locator(`#messages tr[data-offset="${result.offset}"] td.value pre`);
    result.by_offset = (await byOffset.textContent()).trim();
    result.by_offset_url = page.url();
    await shot("03-found-by-offset.png");

    // Find it by substring, starting from the topic list and using the keyboard.
    await page.goto(`${base}/ui/topics?q=${encodeURIComponent(name)}`);
    await page.click(`#topics a:text-is("${name}")`);
    await page.waitForURL(`**/ui/topics/${name}`);
    await page.focus("#browse input[name=filter]");
    await page.keyboard.type(value.slice(3, 15));
    await page.selectOption("#browse select[name=from]", "oldest");
    await Promise.all([page.waitForURL(/filter=/), page.keyboard.press("Enter")]);
    const rows = page.locator("#messages tbody tr");
    result.by_substring_rows = await rows.count();
    result.by_substring = (await rows.first().locator("td.value pre").textContent()).trim();
    result.by_substring_headers = (await rows.first().locator("td").last().textContent()).trim();
    await shot("04-found-by-substring.png");
  } else if (phase === "group") {
    await page.goto(`${base}/ui/groups`);
    await Promise.all([page.waitForURL(`**/ui/groups/${name}`), page.click(`#groups a:text-is("${name}")`)]);
    result.status = await page.getAttribute("#group-status [data-status]", "data-status");
    result.total_lag = Number((await page.textContent("#total-lag")).trim());
    result.state = (await page.textContent("#group-state")).trim();
    result.partitions = await page.$$eval("#offsets tbody tr", (trs) =>
      trs.map((tr) => Array.from(tr.querySelectorAll("td")).map((td) => td.textContent.trim())));
    result.chart = await page.locator("svg.chart").count();
    await shot("05-group-lag.png");
  } else {
    throw new Error(`unknown phase ${phase}`);
  }
} catch (e) {
  await shot(`failure-${phase}.png`).catch(() => {});
  console.error(String(e && e.stack || e));
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(result));
