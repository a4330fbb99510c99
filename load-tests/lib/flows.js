// The user journeys the scenarios mix: a browse, a cart edit, a checkout.
import { fail } from 'k6';
import { admin } from './config.js';
import * as api from './api.js';
import { adminToken } from './users.js';

const WORDS = ['lamp', 'chair', 'mug', 'desk', 'coffee', 'book', 'shirt', 'bag', 'pen', 'table'];

function pick(items) {
  return items[Math.floor(Math.random() * items.length)];
}

// The catalog the journeys use: product ids and category slugs. With `stock`, tops every
// product up (admin) so checkouts test the flow, not an exhausted demo stock.
export function catalog(stock) {
  const products = api.allProducts();
  if (products.length === 0) fail('the catalog is empty: cargo xtask seed');
  if (stock) {
    const token = adminToken(admin);
    for (const product of products) api.setStock(token, product.id, stock);
  }
  let categories = [];
  const response = api.categories();
  try {
    const body = response.json();
    categories = (body.items || body || []).map((c) => c.slug).filter(Boolean);
  } catch (_) {
    categories = [];
  }
  return { ids: products.map((p) => p.id), categories };
}

export function browseOnce(data) {
  const roll = Math.random();
  if (roll < 0.45) {
    api.expect(api.getProduct(pick(data.ids)), 'detail', 200);
  } else if (roll < 0.7) {
    api.expect(api.listProducts({ limit: 20 }), 'list', 200);
  } else if (roll < 0.9) {
    api.expect(api.listProducts({ q: pick(WORDS), limit: 20 }), 'search', 200);
  } else if (data.categories.length > 0 && roll < 0.95) {
    api.expect(api.listProducts({ category: pick(data.categories), limit: 20 }), 'by category', 200);
  } else {
    api.expect(api.categories(), 'categories', 200);
  }
}

export function cartOnce(data, token) {
  const id = pick(data.ids);
  api.expect(api.putCartItem(token, id, 1 + Math.floor(Math.random() * 3)), 'cart put', 200);
  api.expect(api.getCart(token), 'cart get', 200);
  if (Math.random() < 0.5) api.deleteCartItem(token, id);
}

export function checkoutOnce(data, token, timeoutSeconds) {
  api.clearCart(token);
  const lines = [[pick(data.ids), 1]];
  if (Math.random() < 0.5) lines.push([pick(data.ids), 2]);
  return api.checkout(token, lines, 'tok_visa', timeoutSeconds);
}
