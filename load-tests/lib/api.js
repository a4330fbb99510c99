// The Shop REST API as k6 calls: every request is tagged with `name` (the endpoint, so URLs
// with ids do not each become a series) and `api` (the group the thresholds are set on:
// auth, browse, cart, checkout, account), and says which statuses it expects, so an expected
// 404 or 409 is not counted in http_req_failed.
import http from 'k6/http';
import { check, fail, sleep } from 'k6';
import { urls } from './config.js';
import { checkoutStarted, checkoutPlaced, checkoutConfirmed, checkoutCancelled, checkoutStuck, orderToConfirmed } from './metrics.js';

const JSON_HEADERS = { 'content-type': 'application/json' };

function params(name, api, token, expected, extraHeaders) {
  const headers = Object.assign({}, JSON_HEADERS, extraHeaders || {});
  if (token) headers.authorization = `Bearer ${token}`;
  return { headers, tags: { name, api }, responseCallback: http.expectedStatuses(...expected) };
}

function body(response) {
  try {
    return response.json();
  } catch (_) {
    return null;
  }
}

// A check whose name carries the endpoint, so a failing one says where.
export function expect(response, name, status, extra) {
  const checks = { [`${name}: status ${status}`]: (r) => r.status === status };
  if (extra) Object.assign(checks, extra);
  return check(response, checks);
}

export function isProblem(response) {
  const type = response.headers['Content-Type'] || '';
  const problem = body(response);
  return type.startsWith('application/problem+json') && problem !== null && typeof problem.code === 'string';
}

// ---- user

export function register(email, password, name) {
  const response = http.post(`${urls.user}/v1/users`, JSON.stringify({ email, password, name }), params('user_register', 'auth', null, [201, 409]));
  return response;
}

export function login(email, password) {
  const response = http.post(`${urls.user}/v1/auth/login`, JSON.stringify({ email, password }), params('auth_login', 'auth', null, [200]));
  expect(response, 'login', 200, { 'login: access token': (r) => !!(body(r) || {}).access_token });
  return body(response);
}

export function refresh(refreshToken) {
  const response = http.post(`${urls.user}/v1/auth/refresh`, JSON.stringify({ refresh_token: refreshToken }), params('auth_refresh', 'auth', null, [200]));
  expect(response, 'refresh', 200);
  return body(response);
}

export function logout(refreshToken) {
  return http.post(`${urls.user}/v1/auth/logout`, JSON.stringify({ refresh_token: refreshToken }), params('auth_logout', 'auth', null, [200, 204]));
}

export function me(token) {
  return http.get(`${urls.user}/v1/users/me`, params('user_me', 'account', token, [200]));
}

export function updateMe(token, name) {
  return http.patch(`${urls.user}/v1/users/me`, JSON.stringify({ name }), params('user_update', 'account', token, [200]));
}

export function jwks() {
  return http.get(`${urls.user}/.well-known/jwks.json`, params('jwks', 'auth', null, [200]));
}

// ---- product

export function listProducts(query, expected) {
  const q = Object.entries(query || {})
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&');
  return http.get(`${urls.product}/v1/products${q ? `?${q}` : ''}`, params(query && query.q ? 'product_search' : 'product_list', 'browse', null, expected || [200]));
}

export function getProduct(id, expected) {
  return http.get(`${urls.product}/v1/products/${id}`, params('product_get', 'browse', null, expected || [200]));
}

export function categories() {
  return http.get(`${urls.product}/v1/categories`, params('categories', 'browse', null, [200]));
}

export function setStock(adminToken, id, onHand) {
  return http.put(`${urls.product}/v1/products/${id}/stock`, JSON.stringify({ on_hand: onHand }), params('product_stock', 'admin', adminToken, [200]));
}

// Every product of the catalog (follows the cursor).
export function allProducts() {
  const products = [];
  let cursor = null;
  for (let page = 0; page < 50; page += 1) {
    const response = listProducts(cursor ? { limit: 100, cursor } : { limit: 100 });
    const data = body(response);
    if (response.status !== 200 || !data) fail(`cannot list products: ${response.status} ${response.body}`);
    products.push(...data.items);
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  return products;
}

// ---- cart

export function getCart(token) {
  return http.get(`${urls.cart}/v1/cart`, params('cart_get', 'cart', token, [200]));
}

export function putCartItem(token, productId, quantity, expected) {
  return http.put(`${urls.cart}/v1/cart/items/${productId}`, JSON.stringify({ quantity }), params('cart_put', 'cart', token, expected || [200]));
}

export function deleteCartItem(token, productId) {
  return http.del(`${urls.cart}/v1/cart/items/${productId}`, null, params('cart_delete_item', 'cart', token, [200, 204]));
}

export function clearCart(token) {
  return http.del(`${urls.cart}/v1/cart`, null, params('cart_clear', 'cart', token, [200, 204]));
}

// ---- order, payment, notification

export const ADDRESS = { name: 'Ada Lovelace', line1: '12 St James Square', city: 'London', postal_code: 'SW1Y 4JH', country: 'GB' };

export function placeOrder(token, cardToken, key, expected) {
  const payload = JSON.stringify({ shipping_address: ADDRESS, payment: { card_token: cardToken } });
  return http.post(`${urls.order}/v1/orders`, payload, params('order_place', 'checkout', token, expected || [201], { 'idempotency-key': key }));
}

export function getOrder(token, id) {
  return http.get(`${urls.order}/v1/orders/${id}`, params('order_get', 'checkout', token, [200]));
}

export function listOrders(token) {
  return http.get(`${urls.order}/v1/orders`, params('order_list', 'account', token, [200]));
}

export function cancelOrder(token, id) {
  return http.post(`${urls.order}/v1/orders/${id}/cancel`, null, params('order_cancel', 'checkout', token, [200]));
}

export function payments(token, orderId) {
  return http.get(`${urls.payment}/v1/payments?order_id=${orderId}`, params('payments', 'account', token, [200]));
}

export function notifications(token) {
  return http.get(`${urls.notification}/v1/notifications`, params('notifications', 'account', token, [200]));
}

// Polls the order until it leaves pending_payment or `timeoutSeconds` pass; returns the last
// order seen (null if it could not be read).
export function waitForOutcome(token, id, timeoutSeconds) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let order = null;
  let pause = 0.01;
  while (Date.now() < deadline) {
    const response = getOrder(token, id);
    order = body(response);
    if (order && order.status !== 'pending_payment') return order;
    sleep(pause);
    pause = Math.min(pause * 1.5, 0.05);
  }
  return order;
}

// One checkout of `lines` ([productId, quantity]) through the funnel metrics: fill the cart,
// place the order, poll for the outcome. Returns the final order or null.
export function checkout(token, lines, cardToken, timeoutSeconds) {
  checkoutStarted.add(1);
  for (const [productId, quantity] of lines) {
    expect(putCartItem(token, productId, quantity), 'cart put', 200);
  }
  const key = `k6-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const placed = placeOrder(token, cardToken, key, [201, 409]);
  if (!expect(placed, 'order place', 201)) return null;
  checkoutPlaced.add(1);
  const start = Date.now();
  const order = body(placed);
  const outcome = waitForOutcome(token, order.id, timeoutSeconds);
  if (outcome && outcome.status === 'confirmed') {
    orderToConfirmed.add(Date.now() - start);
    checkoutConfirmed.add(1);
  } else if (outcome && outcome.status === 'cancelled') {
    checkoutCancelled.add(1);
  } else {
    checkoutStuck.add(1);
  }
  return outcome;
}
