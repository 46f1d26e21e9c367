// Basic accessibility checks for the console's browser test.

/** Every visible form control has a label, every button and link a name. */
export async function checkLabels(page, where) {
  const missing = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll("input:not([type=hidden]), textarea, select")) {
      const named = el.labels?.length || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
      if (!named) out.push(el.outerHTML.slice(0, 120));
    }
    for (const el of document.querySelectorAll("button, a[href]")) {
      const name = (el.textContent || "").trim() || el.getAttribute("aria-label");
      if (!name) out.push(el.outerHTML.slice(0, 120));
    }
    return out;
  });
  if (missing.length) throw new Error(`${where}: unlabelled controls: ${missing.join(" | ")}`);
}

/** Pressing Tab from the top reaches each named control (by label or text). */
export async function keyboardReaches(page, names, maxTabs = 80) {
  await page.evaluate(() => { document.activeElement?.blur(); window.scrollTo(0, 0); });
  await page.locator("body").focus();
  const reached = new Set();
  for (let i = 0; i < maxTabs && reached.size < names.length; i++) {
    await page.keyboard.press("Tab");
    const name = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return "";
      const label = el.labels?.[0]?.textContent ?? "";
      return (label || el.getAttribute("aria-label") || el.textContent || "").trim();
    });
    for (const want of names) if (name === want) reached.add(want);
  }
  const missed = names.filter((n) => !reached.has(n));
  if (missed.length) throw new Error(`not reachable by keyboard: ${missed.join(", ")}`);
}
