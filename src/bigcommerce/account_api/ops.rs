//! The GraphQL documents the client sends, and nothing else: the simulator serves exactly these
//! (and refuses any other document with `errors[]`).

pub const ACCOUNT_USERS: &str = "query AccountUsers($first: Int!, $after: String) { account { users(first: $first, after: $after) { pageInfo { hasNextPage endCursor } collectionInfo { totalItems } edges { node { id email firstName lastName } } } } }";

pub const STORE_USERS: &str = "query StoreUsers($stores: Int!, $storesAfter: String, $first: Int!, $after: String) { account { stores(first: $stores, after: $storesAfter) { pageInfo { hasNextPage endCursor } edges { cursor node { id storeHash users(first: $first, after: $after) { pageInfo { hasNextPage endCursor } collectionInfo { totalItems } edges { node { id email permissions status } } } } } } } }";

pub const ADD_USER_TO_ACCOUNT: &str = "mutation AddUserToAccount($email: String!) { account { addUserToAccount(input: { email: $email }) { account { id } } } }";

pub const REMOVE_USER_FROM_ACCOUNT: &str = "mutation RemoveUserFromAccount($email: String!) { account { removeUserFromAccount(input: { email: $email }) { accountId userId } } }";

pub const ADD_USER_TO_STORE: &str = "mutation AddUserToStore($email: String!, $storeId: String!) { user { addUserToStore(input: { user: { email: $email }, storeId: $storeId }) { storeId } } }";

pub const REMOVE_USER_FROM_STORE: &str = "mutation RemoveUserFromStore($userId: ID!, $storeId: String!) { user { removeUserFromStore(input: { storeId: $storeId, userId: $userId }) { storeId user { id email } } } }";

/// Where each mutation's result object sits in `data` (a JSON pointer): present means done.
pub const ADD_USER_TO_ACCOUNT_RESULT: &str = "/account/addUserToAccount";
pub const REMOVE_USER_FROM_ACCOUNT_RESULT: &str = "/account/removeUserFromAccount";
pub const ADD_USER_TO_STORE_RESULT: &str = "/user/addUserToStore";
pub const REMOVE_USER_FROM_STORE_RESULT: &str = "/user/removeUserFromStore";
