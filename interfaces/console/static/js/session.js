// Who is signed in: the bearer token (sessionStorage only), its claims, and API calls.

const TOKEN_KEY = "courier.token";

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function base64UrlJson(part) {
  const text = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = text + "=".repeat((4 - (text.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** The token's claims, read (not verified: the server does that) to show who this is. */
export function claimsOf(token) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("a token has three parts separated by dots");
  let claims;
  try {
    claims = base64UrlJson(parts[1]);
  } catch {
    throw new Error("this is not a JSON Web Token");
  }
  if (typeof claims.sub !== "string" || typeof claims.tenant !== "string") {
    throw new Error("the token has no sub or tenant claim");
  }
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) {
    throw new Error("the token has expired: make a new one");
  }
  return {
    user: claims.sub,
    tenant: claims.tenant,
    roles: Array.isArray(claims.roles) ? claims.roles : ["user"],
    expires: typeof claims.exp === "number" ? new Date(claims.exp * 1000) : null,
  };
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function current() {
  const value = token();
  if (!value) return null;
  try {
    return { token: value, ...claimsOf(value) };
  } catch {
    sessionStorage.removeItem(TOKEN_KEY);
    return null;
  }
}

export function signIn(value) {
  const trimmed = value.trim().replace(/^Bearer\s+/i, "");
  const claims = claimsOf(trimmed);
  sessionStorage.setItem(TOKEN_KEY, trimmed);
  return { token: trimmed, ...claims };
}

export function signOut() {
  sessionStorage.clear();
}

export const hasRole = (who, role) => Boolean(who && who.roles.includes(role));

/** Call the API with the signed-in token; JSON in and out; errors as ApiError. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${token() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "network_error", "the server cannot be reached");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(
      response.status,
      error.code || "http_" + response.status,
      error.message || response.statusText || "request failed",
      error.details || [],
    );
  }
  return data;
}

/** One line for a person: "403 forbidden: this needs the role admin". */
export function describe(error) {
  if (error instanceof ApiError) {
    return error.status ? `${error.status} ${error.code}: ${error.message}` : error.message;
  }
  return String(error && error.message ? error.message : error);
}
