// grpc: the product and cart services' gRPC APIs (k6/net/grpc with server reflection):
// GetProduct, BatchGetProducts and GetCart with a user's token.
//   cargo xtask load grpc [--vus 10] [--duration 1m]
import { check } from 'k6';
import grpc from 'k6/net/grpc';
import { grpc as addresses, int, str } from '../lib/config.js';
import { createUsers, sessionFor } from '../lib/users.js';
import { summaryTrendStats } from '../lib/options.js';
import { summaryFor } from '../lib/summary.js';
import { catalog } from '../lib/flows.js';

export const options = {
  setupTimeout: '5m',
  scenarios: { grpc: { executor: 'constant-vus', vus: int('VUS', 10), duration: str('DURATION', '1m') } },
  thresholds: {
    checks: ['rate>0.999'],
    'grpc_req_duration{method:GetProduct}': ['p(95)<50', 'p(99)<100'],
    'grpc_req_duration{method:BatchGetProducts}': ['p(95)<100', 'p(99)<200'],
    'grpc_req_duration{method:GetCart}': ['p(95)<100', 'p(99)<200'],
  },
  summaryTrendStats,
};

const product = new grpc.Client();
const cart = new grpc.Client();
let connected = false;

export function setup() {
  return Object.assign(catalog(), { users: createUsers(int('USERS', int('VUS', 10))) });
}

export default function (data) {
  if (!connected) {
    product.connect(addresses.product, { plaintext: true, reflect: true, timeout: '5s' });
    cart.connect(addresses.cart, { plaintext: true, reflect: true, timeout: '5s' });
    connected = true;
  }
  const id = data.ids[Math.floor(Math.random() * data.ids.length)];
  const got = product.invoke('shop.product.v1.ProductService/GetProduct', { product_id: id }, { tags: { method: 'GetProduct' } });
  check(got, { 'GetProduct: OK': (r) => r && r.status === grpc.StatusOK });
  const ids = [id, data.ids[(data.ids.indexOf(id) + 1) % data.ids.length]];
  const batch = product.invoke('shop.product.v1.ProductService/BatchGetProducts', { product_ids: ids }, { tags: { method: 'BatchGetProducts' } });
  check(batch, { 'BatchGetProducts: OK': (r) => r && r.status === grpc.StatusOK });
  const session = sessionFor(data.users);
  const mine = cart.invoke('shop.cart.v1.CartService/GetCart', { user_id: session.id }, { metadata: { authorization: `Bearer ${session.access}` }, tags: { method: 'GetCart' } });
  check(mine, { 'GetCart: OK': (r) => r && r.status === grpc.StatusOK });
}

export const handleSummary = summaryFor('grpc');
