// node --test: every error code the server can answer becomes a sentence in the page
// (api.js), rate limits included. Driven by tests/web/test_api_js.py, which collects the
// codes from the server's source into $DIALTONE_ERROR_CODES.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, CODE_TEXT, errorSentence } from "../../dialtone/web/api.js";

const input = process.env.DIALTONE_ERROR_CODES;
const codes = input ? JSON.parse(input) : null;
const needsCodes = { skip: codes ? false : "run through tests/web/test_api_js.py (no DIALTONE_ERROR_CODES)" };
// Their server text names the rule that was broken: shown, made a sentence.
const DETAILED = new Set(["invalid_username", "weak_password"]);
const isSentence = (text) => /^[A-Z][^]*[.!?]$/.test(text);

test("every code the server answers has a sentence of its own", needsCodes, () => {
  assert.ok(codes.length > 30, `only ${codes.length} codes collected`);
  const missing = codes.filter((code) => !DETAILED.has(code) && !(code in CODE_TEXT));
  assert.deepEqual(missing, []);
  for (const code of codes) {
    const error = new ApiError(400, code, "a short technical phrase from the server");
    assert.ok(isSentence(error.friendly), `${code}: ${error.friendly}`);
    if (!DETAILED.has(code)) assert.ok(!error.friendly.includes("technical phrase"), code);
  }
});

test("a detailed refusal shows the server's reason as a sentence", () => {
  const error = new ApiError(400, "weak_password", "password must be at least 10 characters");
  assert.equal(error.friendly, "Password must be at least 10 characters.");
});

test("a rate limit says so, and how long to wait", () => {
  const limited = new ApiError(429, "rate_limited", "too many attempts, try again later", 5);
  assert.equal(limited.friendly, "You are doing that too often. Wait a moment and try again: about 5 seconds.");
  const soon = new ApiError(429, "rate_limited", "too many attempts, try again later", 1);
  assert.equal(soon.friendly, "You are doing that too often. Wait a moment and try again: about 1 second.");
  assert.equal(new ApiError(429, "rate_limited", "x").friendly, "You are doing that too often. Wait a moment and try again.");
});

test("an unknown code, or none, still reads as a sentence", () => {
  assert.equal(errorSentence("something_new", "the thing broke"), "The thing broke.");
  assert.equal(new ApiError(503, "http_503", "").friendly, "The server is busy or cannot reach its database. Try again shortly.");
  for (const text of Object.values(CODE_TEXT)) assert.ok(isSentence(text), text);
});
